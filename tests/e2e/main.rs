//! End-to-end tests of `bottle` on a real Docker engine.
//!
//! Every test runs real bottles (`bottle run --json e2e -- bash -c …`) whose sidecar reaches a
//! fake outside world: a test network holding an HTTPS + git upstream (`upstream.test`), joined
//! by the sidecars through `BOTTLE_EGRESS_NETWORK`. When `CI` is set a missing engine fails the
//! run; otherwise the tests are skipped with a loud message.
//!
//! Run: `cargo test -p bottle --test e2e --release -- --test-threads=2`.
pub(crate) mod agents;
mod gemba;
mod git_gate;
mod harness;
mod lifecycle;
mod models;
mod security_regressions;

use std::fmt::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::*;

fn code_of(out: &str, key: &str) -> Option<String> {
    out.lines().find_map(|l| {
        l.strip_prefix(&format!("{key}="))
            .map(|v| v.trim().to_string())
    })
}

#[test]
fn run_exit_code_and_result_object() {
    require_engine!();
    let h = home("exit");
    // The agent container starts beside the sidecar; its command runs only once the sidecar
    // is ready (the start gate), so the very first request already goes through.
    let r = run_script(
        &h,
        "curl -s -o /dev/null -w 'first=%{http_code}\n' https://upstream.test/echo; echo out; echo err >&2; exit 7",
    );
    assert_eq!(
        r.code, 7,
        "bottle run exits with the agent's code; stderr: {}",
        r.stderr
    );
    assert_eq!(
        code_of(&r.stderr, "first").as_deref(),
        Some("200"),
        "the agent's first request, right at its start: {}",
        r.stderr
    );
    assert_eq!(r.result["exit_code"], 7);
    assert!(r.result["bottle_id"]
        .as_str()
        .is_some_and(|s| s.len() == 12));
    assert!(r.result["duration_ms"].as_u64().is_some());
    assert!(r.result["audit"]["allowed"].is_u64());
    assert!(r.stderr.contains("out") && r.stderr.contains("err"));
    assert!(
        !r.stderr.contains("bottle-exit:"),
        "the gate's exit trailer is stripped from the output: {}",
        r.stderr
    );
    // By default the objects go in a detached process right after the result.
    assert_eq!(r.result["teardown"], "background");
    let id = r.result["bottle_id"].as_str().unwrap();
    let (c, n) = wait_gone(id, Duration::from_secs(20));
    assert!(
        c.is_empty() && n.is_empty(),
        "objects left 20 s after run: {c:?} {n:?}"
    );
    assert!(
        wait_removed(&runtime_base().join(id), Duration::from_secs(5)),
        "runtime dir removed by the background teardown"
    );
    // --wait-teardown: nothing is left when `bottle run` returns.
    let o = bottle_cmd(&h)
        .args(["run", "--json", "--wait-teardown", "e2e", "--", "true"])
        .output()
        .unwrap();
    let res: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(res["teardown"], "done");
    let id = res["bottle_id"].as_str().unwrap();
    let (c, n) = objects_of(id);
    assert!(
        c.is_empty() && n.is_empty(),
        "objects left after run --wait-teardown: {c:?} {n:?}"
    );
    assert!(!runtime_base().join(id).exists(), "runtime dir removed");
}

/// Check 1: An allowed route works over HTTPS with curl, git, Python and Node, using only the env
/// the launcher set.
#[test]
fn allowed_route_works_for_common_clients() {
    require_engine!();
    let h = home("clients");
    std::fs::write(
        h.workspace.join("connect.js"),
        r#"// Node 18 ignores HTTPS_PROXY: CONNECT through it by hand, trust via NODE_EXTRA_CA_CERTS.
const http = require('http'), tls = require('tls');
const p = new URL(process.env.HTTPS_PROXY);
const req = http.request({ host: p.hostname, port: p.port, method: 'CONNECT', path: 'upstream.test:443' });
req.on('connect', (res, sock) => {
  if (res.statusCode !== 200) { console.log('node=connect-' + res.statusCode); process.exit(1); }
  const t = tls.connect({ socket: sock, servername: 'upstream.test' }, () => {
    t.write('GET /echo?client=node HTTP/1.1\r\nHost: upstream.test\r\nConnection: close\r\n\r\n');
  });
  let d = ''; t.on('data', c => d += c);
  t.on('end', () => console.log('node=' + d.split(' ')[1]));
  t.on('error', e => { console.log('node=error ' + e.message); process.exit(1); });
});
req.on('error', e => { console.log('node=error ' + e.message); process.exit(1); });
req.end();
"#,
    )
    .unwrap();
    let script = r#"
curl -sS -o /dev/null -w 'curl=%{http_code}\n' 'https://upstream.test/echo?client=curl'
echo "git=$(git ls-remote https://upstream.test/git/repo.git 2>&1 | grep -c refs/heads/main)"
python3 - <<'PY'
import urllib.request, requests
try:
    print("urllib=%d" % urllib.request.urlopen("https://upstream.test/echo?client=urllib", timeout=20).status)
except Exception as e:
    print("urllib=error %s" % e)
try:
    print("requests=%d" % requests.get("https://upstream.test/echo?client=requests", timeout=20).status_code)
except Exception as e:
    print("requests=error %s" % e)
PY
node /workspace/connect.js
"#;
    let r = run_script(&h, script);
    let out = &r.stderr;
    assert_eq!(
        code_of(out, "curl").as_deref(),
        Some("200"),
        "curl via the sidecar; output:\n{out}"
    );
    assert_eq!(
        code_of(out, "git").as_deref(),
        Some("1"),
        "git ls-remote over smart HTTP; output:\n{out}"
    );
    assert_eq!(
        code_of(out, "urllib").as_deref(),
        Some("200"),
        "python urllib; output:\n{out}"
    );
    assert_eq!(
        code_of(out, "requests").as_deref(),
        Some("200"),
        "python requests; output:\n{out}"
    );
    assert_eq!(
        code_of(out, "node").as_deref(),
        Some("200"),
        "node CONNECT + tls; output:\n{out}"
    );
    assert!(
        r.result["audit"]["allowed"].as_u64().unwrap_or(0) >= 5,
        "audit summary counts allows: {}",
        r.result
    );
}

/// Check 2: A host without a route gets a 403 with `X-Bottle-Deny`; an IP literal with a spoofed Host
/// is refused and never reaches the upstream.
#[test]
fn policy_denies_unknown_hosts_and_ip_literals() {
    require_engine!();
    let w = world();
    let h = home("deny");
    let marker = rand_hex(12);
    let script = format!(
        r#"
curl -s -o /dev/null -D /tmp/h1 -w 'plain=%{{http_code}}\n' http://other.test/
echo "plain_hdr=$(grep -ci '^x-bottle-deny' /tmp/h1)"
curl -sv -o /dev/null -w 'tls=%{{http_connect}}/%{{http_code}}\n' https://other.test/ 2>/tmp/v2
echo "tls_hdr=$(grep -ci 'x-bottle-deny' /tmp/v2)"
curl -sk -o /dev/null -w 'iplit=%{{http_connect}}/%{{http_code}}\n' -H 'Host: upstream.test' 'https://{ip}/echo?spoof={marker}'
curl -s -o /dev/null -w 'iplit_http=%{{http_code}}\n' -H 'Host: upstream.test' 'http://{ip}/echo?spoof={marker}'
"#,
        ip = w.upstream_ip
    );
    let r = run_script(&h, &script);
    let out = &r.stderr;
    assert_eq!(
        code_of(out, "plain").as_deref(),
        Some("403"),
        "output:\n{out}"
    );
    assert_eq!(
        code_of(out, "plain_hdr").as_deref(),
        Some("1"),
        "X-Bottle-Deny on plain HTTP; output:\n{out}"
    );
    let tls = code_of(out, "tls").unwrap_or_default();
    assert!(
        tls.contains("403"),
        "HTTPS to a denied host → 403 (CONNECT or bumped); got {tls}; output:\n{out}"
    );
    assert_ne!(
        code_of(out, "tls_hdr").as_deref(),
        Some("0"),
        "X-Bottle-Deny on HTTPS; output:\n{out}"
    );
    let ip = code_of(out, "iplit").unwrap_or_default();
    assert!(
        !ip.ends_with("/200") && !ip.starts_with("200/200"),
        "IP literal refused; got {ip}"
    );
    assert_ne!(
        code_of(out, "iplit_http").as_deref(),
        Some("200"),
        "output:\n{out}"
    );
    let seen = upstream_requests()
        .iter()
        .any(|v| v["path"].as_str().unwrap_or("").contains(&marker));
    assert!(
        !seen,
        "a spoofed-Host IP-literal request reached the upstream"
    );
    assert!(
        r.result["audit"]["denied"].as_u64().unwrap_or(0) >= 3,
        "audit summary counts denies: {}",
        r.result
    );
}

/// Check 3: No route off the box: TCP to the upstream, to every host IP (open and closed ports) and
/// UDP/53 anywhere get nothing; DNS reaches only the sidecar.
#[test]
fn no_route_off_box() {
    require_engine!();
    let w = world();
    let h = home("offbox");
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let open_port = listener.local_addr().unwrap().port();
    let mut tcp: Vec<(String, u16)> =
        vec![(w.upstream_ip.clone(), 443), (w.upstream_ip.clone(), 80)];
    let mut udp: Vec<String> = vec!["8.8.8.8".into(), "1.1.1.1".into(), w.upstream_ip.clone()];
    for ip in host_ips() {
        tcp.push((ip.clone(), open_port));
        tcp.push((ip.clone(), 1));
        tcp.push((ip.clone(), 53));
        udp.push(ip);
    }
    if let Ok(rc) = std::fs::read_to_string("/etc/resolv.conf") {
        udp.extend(
            rc.lines()
                .filter_map(|l| l.strip_prefix("nameserver "))
                .map(|s| s.trim().to_string()),
        );
    }
    std::fs::write(
        h.workspace.join("probe.py"),
        r#"import json, socket, threading
t = json.load(open("/workspace/targets.json"))
res = {}
def tcp(ip, port):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((ip, port)); r = "connected"
    except socket.timeout:
        r = "timeout"
    except ConnectionRefusedError:
        r = "refused"
    except OSError as e:
        r = "error%d" % e.errno
    res["tcp %s:%d" % (ip, port)] = r
QUERY = bytes.fromhex("abcd01000001000000000000") + b"\x0bleak-e2e-xx\x07example\x00\x00\x01\x00\x01"
def udp(ip):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    try:
        s.sendto(QUERY, (ip, 53)); s.recvfrom(512); r = "answer"
    except socket.timeout:
        r = "none"
    except OSError as e:
        r = "error%d" % e.errno
    res["udp %s:53" % ip] = r
th = [threading.Thread(target=tcp, args=(ip, p)) for ip, p in t["tcp"]]
th += [threading.Thread(target=udp, args=(ip,)) for ip in t["udp"]]
[x.start() for x in th]; [x.join() for x in th]
try:
    socket.getaddrinfo(t["name"], 443); res["dns"] = "resolved"
except socket.gaierror:
    res["dns"] = "failed"
print("PROBE=" + json.dumps(res))
"#,
    )
    .unwrap();
    // Watch every DNS packet on every host interface while the bottle runs: a query for this
    // name may go to the sidecar (on the bottle's internal bridge) and nowhere else — not to
    // the host's resolver (Docker 20.10's embedded DNS forwards there: CVE-2024-29018).
    let name = format!("leak-{}.example", rand_hex(10));
    let targets = serde_json::json!({"tcp": tcp, "udp": udp, "name": name});
    std::fs::write(h.workspace.join("targets.json"), targets.to_string()).unwrap();
    let capture = DnsCapture::start();
    let r = run_script(&h, "echo \"NS=$(grep ^nameserver /etc/resolv.conf | tr '\\n' ' ')\"; echo \"AGENTIP=$(hostname -I | cut -d' ' -f1)\"; python3 /workspace/probe.py");
    let packets = capture.stop();
    drop(listener);
    let out = &r.stderr;
    let probe: serde_json::Value = serde_json::from_str(
        &code_of(out, "PROBE").unwrap_or_else(|| panic!("probe did not run:\n{out}")),
    )
    .unwrap();
    eprintln!("off-box probes: {probe}");
    for (k, v) in probe.as_object().unwrap() {
        let v = v.as_str().unwrap();
        assert!(
            v != "connected" && v != "refused" && v != "answer" && v != "resolved",
            "{k} → {v}: the agent reached something off the bottle (all probes: {probe})"
        );
    }
    // The only nameserver is Docker's embedded resolver, which forwards only to the sidecar.
    assert_eq!(
        code_of(out, "NS").as_deref(),
        Some("nameserver 127.0.0.11"),
        "output:\n{out}"
    );
    let queries: Vec<&String> = packets.iter().filter(|l| l.contains(&name)).collect();
    // The agent's lookups leave its netns from its own address to the sidecar, its neighbour
    // on the bottle's /28: `IP 10.213.0.19.41234 > 10.213.0.18.53: 1234+ A? leak-….example.`
    let agent_ip = code_of(out, "AGENTIP").expect("agent printed its address");
    let net24 = agent_ip
        .rsplit_once('.')
        .map(|(n, _)| format!("{n}."))
        .unwrap();
    let to_sidecar = |l: &str| {
        l.split(" > ").nth(1).is_some_and(|dst| {
            dst.starts_with(&net24)
                && !dst.starts_with(&format!("{agent_ip}."))
                && dst.contains(".53:")
        })
    };
    assert!(
        queries.iter().any(|l| to_sidecar(l)),
        "the capture saw the agent's lookup reach the sidecar (else it proves nothing): {packets:#?}"
    );
    let leaked: Vec<_> = queries.iter().filter(|l| !to_sidecar(l)).collect();
    assert!(
        leaked.is_empty(),
        "a DNS query for {name} left for somewhere other than the sidecar: {leaked:#?}"
    );
}

/// `tcpdump` on every interface for DNS (port 53, UDP and TCP), one line per packet.
struct DnsCapture {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl DnsCapture {
    fn start() -> DnsCapture {
        let out = std::env::temp_dir().join(format!("bottle-e2e-dns-{}.txt", rand_hex(6)));
        let err = out.with_extension("err");
        let child = std::process::Command::new("tcpdump")
            .args(["-i", "any", "-n", "-l", "-U", "port 53"])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("tcpdump (installed by scripts/deps.sh test)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&err)
            .unwrap_or_default()
            .contains("listening on")
        {
            assert!(
                Instant::now() < deadline,
                "tcpdump did not start: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        DnsCapture { child, out }
    }

    fn stop(mut self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(self.out.with_extension("err"));
        text.lines().map(str::to_string).collect()
    }
}

/// Check 4: A planted secret (the bottle's own token, and a GitHub-token-shaped string) sent in the
/// path, query, a header and the body to an allowed host is blocked; the upstream sees nothing.
/// Needs the sidecar's DLP.
#[test]
fn dlp_blocks_planted_secrets() {
    require_engine!();
    let h = home("dlp");
    let pat = format!("ghp_{}", &rand_hex(36));
    std::fs::write(
        h.workspace.join("leak.txt"),
        format!("{}\n{pat}\n", h.secret),
    )
    .unwrap();
    let script = r#"
for S in $(cat /workspace/leak.txt); do
  k=${S:0:4}
  curl -s -o /dev/null -w "path_$k=%{http_code}\n" "https://upstream.test/dlp/$S"
  curl -s -o /dev/null -w "query_$k=%{http_code}\n" "https://upstream.test/echo?q=$S"
  curl -s -o /dev/null -w "header_$k=%{http_code}\n" -H "X-Leak: $S" https://upstream.test/echo
  curl -s -o /dev/null -w "body_$k=%{http_code}\n" --data "leak=$S" https://upstream.test/echo
done
"#;
    let r = run_script(&h, script);
    let out = &r.stderr;
    for k in [&h.secret[..4], "ghp_"] {
        for place in ["path", "query", "header", "body"] {
            assert_eq!(
                code_of(out, &format!("{place}_{k}")).as_deref(),
                Some("403"),
                "secret {k}… in the {place} must be blocked (DLP); output:\n{out}"
            );
        }
    }
    let logs = docker_ok(&["logs", &world().upstream]);
    assert!(
        !logs.contains(&h.secret) && !logs.contains(&pat),
        "the upstream received a planted secret"
    );
    assert!(
        r.result["audit"]["dlp"].as_u64().unwrap_or(0) >= 8,
        "audit counts DLP blocks: {}",
        r.result
    );
}

/// Check 5: The real secret appears nowhere: agent env, /proc/*/environ and files; `docker inspect`
/// of every bottle container; `docker events`; the sidecar's logs; the runtime dir.
#[test]
fn secret_appears_nowhere() {
    require_engine!();
    let h = home("nowhere");
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let prefix = &h.secret[..h.secret.len() - 20];
    let script = format!(
        r#"
echo "$BOTTLE_ID" > /workspace/id
curl -s -o /dev/null -w 'authed=%{{http_code}}\n' -H "Authorization: Bearer $E2E_TOKEN" "https://upstream.test/echo?inject=$BOTTLE_ID"
printenv; cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n'
grep -rIl -F '{prefix}' /workspace /tmp /home /etc /run /var /opt /root 2>/dev/null | sed 's/^/FOUND=/'
touch /workspace/ready
for i in $(seq 100); do [ -e /workspace/done ] && break; sleep 0.1; done
"#
    );
    let child = bottle_cmd(&h)
        .args(["run", "--json", "e2e", "--", "bash", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for_file(&h.workspace.join("ready"), Duration::from_secs(60)),
        "the agent did not start"
    );
    let id = std::fs::read_to_string(h.workspace.join("id"))
        .unwrap()
        .trim()
        .to_string();
    let (containers, _) = objects_of(&id);
    assert_eq!(containers.len(), 2, "sidecar + agent");
    let mut seen = String::new();
    for c in &containers {
        seen.push_str(&docker_ok(&["inspect", c]));
        let o = docker(&["logs", c]);
        seen.push_str(&String::from_utf8_lossy(&o.stdout));
        seen.push_str(&String::from_utf8_lossy(&o.stderr));
        // The engine's own files for the container (json log, config) when readable.
        let full = docker_ok(&["inspect", "-f", "{{.Id}}", c]);
        let dir = format!("/var/lib/docker/containers/{full}");
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.path().is_file() {
                    seen.push_str(&String::from_utf8_lossy(
                        &std::fs::read(e.path()).unwrap_or_default(),
                    ));
                }
            }
        }
    }
    let state_base = runtime_base();
    let state = state_base.join(&id);
    assert!(
        state.is_dir(),
        "runtime dir {} exists while running",
        state.display()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for e in std::fs::read_dir(&state).unwrap().flatten() {
        seen.push_str(&String::from_utf8_lossy(
            &std::fs::read(e.path()).unwrap_or_default(),
        ));
    }
    std::fs::write(h.workspace.join("done"), "").unwrap();
    let o = child.wait_with_output().unwrap();
    let agent_out = String::from_utf8_lossy(&o.stderr).to_string();
    // The background teardown's events and removals are part of what is checked below.
    let (c, n) = wait_gone(&id, Duration::from_secs(20));
    assert!(c.is_empty() && n.is_empty(), "objects left: {c:?} {n:?}");
    wait_removed(&runtime_base().join(&id), Duration::from_secs(5));
    let t1 = t0 + 600;
    let events = docker_ok(&[
        "events",
        "--since",
        &t0.to_string(),
        "--until",
        &(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .min(t1))
        .to_string(),
        "--format",
        "{{json .}}",
    ]);
    assert!(o.status.success(), "run failed: {agent_out}");
    assert!(
        agent_out.contains("BOTTLE_ID="),
        "the agent printed its env"
    );
    assert!(
        !agent_out.contains(prefix),
        "the secret (or its prefix) is visible inside the agent:\n{agent_out}"
    );
    assert!(
        !agent_out.contains("FOUND="),
        "a file in the agent holds the secret:\n{agent_out}"
    );
    assert!(
        !seen.contains(&h.secret),
        "the secret is in docker inspect/logs/engine files or the runtime dir"
    );
    assert!(events.contains(&id), "docker events were captured");
    assert!(
        !events.contains(&h.secret),
        "the secret is in docker events"
    );
    assert!(!state.exists(), "runtime dir removed at teardown");
    let leftover = walk_text(&state_base);
    assert!(
        !leftover.contains(&h.secret),
        "the secret is in a host runtime file"
    );
    // The agent's placeholder reached the upstream as the real token (credential injection).
    let authed = code_of(&agent_out, "authed");
    assert_eq!(
        authed.as_deref(),
        Some("200"),
        "authed request through the sidecar; output:\n{agent_out}"
    );
    // Outside the bottle, the upstream got the real token in place of the placeholder.
    let req = upstream_requests()
        .into_iter()
        .find(|r| {
            r["path"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("inject={id}"))
        })
        .expect("the upstream logged the injected request");
    let auth = req["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| {
            h[0].as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("authorization"))
        })
        .and_then(|h| h[1].as_str())
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        auth,
        format!("Bearer {}", h.secret),
        "credential injection on the route"
    );
}

fn runtime_base() -> std::path::PathBuf {
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        return std::path::PathBuf::from(x).join("bottle");
    }
    std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".local/state/bottle/run")
}

fn walk_text(dir: &std::path::Path) -> String {
    let mut s = String::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                s.push_str(&walk_text(&p));
            } else {
                s.push_str(&String::from_utf8_lossy(
                    &std::fs::read(&p).unwrap_or_default(),
                ));
            }
        }
    }
    s
}

/// Check 6: The envelope: sidecar ip_forward 0; the agent runs non-root with no capabilities and
/// can write only the workspace, /tmp and $HOME; no Docker socket; internal network flags.
#[test]
fn security_envelope() {
    require_engine!();
    let imgs = images();
    let h = home("envelope");
    let script = r#"
echo "$BOTTLE_ID" > /workspace/id
echo "uid=$(id -u)"
grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status | tr -d '\t' | sed 's/:/=/'
for d in / /etc /usr /var /opt /root /sbin; do touch "$d/bottle-w" 2>/dev/null && echo "wrote=$d"; done
for d in /workspace /tmp "$HOME"; do touch "$d/bottle-w" 2>/dev/null && echo "ok=$d"; done
[ -e /var/run/docker.sock ] || [ -e /run/docker.sock ] && echo "dockersock=present"
touch /workspace/ready
for i in $(seq 150); do [ -e /workspace/done ] && break; sleep 0.1; done
"#;
    let child = bottle_cmd(&h)
        .args(["run", "--json", "e2e", "--", "bash", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for_file(&h.workspace.join("ready"), Duration::from_secs(60)),
        "the agent did not start"
    );
    let id = std::fs::read_to_string(h.workspace.join("id"))
        .unwrap()
        .trim()
        .to_string();
    let sidecar = format!("bottle-{id}-sidecar");
    let agent = format!("bottle-{id}-agent");
    let fwd = docker_ok(&[
        "run",
        "--rm",
        "--network",
        &format!("container:{sidecar}"),
        "--entrypoint",
        "cat",
        &imgs.agent,
        "/proc/sys/net/ipv4/ip_forward",
    ]);
    let fmt = "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.Config.User}} {{.HostConfig.Dns}}";
    let sc = docker_ok(&["inspect", "-f", fmt, &sidecar]);
    let ag = docker_ok(&["inspect", "-f", fmt, &agent]);
    let mounts = docker_ok(&["inspect", "-f", "{{json .Mounts}}", &agent]);
    let sidecar_ip = docker_ok(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"bottle-{id}-int\").IPAddress}}}}"),
        &sidecar,
    ]);
    let net = docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{.Internal}} {{.EnableIPv6}} {{json .Options}}",
        &format!("bottle-{id}-int"),
    ]);
    std::fs::write(h.workspace.join("done"), "").unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(fwd, "0", "the sidecar's net.ipv4.ip_forward");
    assert!(
        sc.starts_with("true [ALL] [no-new-privileges:true] 65534:65534"),
        "sidecar envelope: {sc}"
    );
    assert!(
        ag.starts_with("true [ALL] [no-new-privileges:true] 1000:1000"),
        "agent envelope: {ag}"
    );
    assert!(
        ag.ends_with(&format!("[{sidecar_ip}]")),
        "agent DNS pinned to the sidecar {sidecar_ip}: {ag}"
    );
    assert!(
        !mounts.contains("docker.sock"),
        "no Docker socket mounted: {mounts}"
    );
    assert!(
        net.starts_with("true false")
            && net.contains("\"com.docker.network.bridge.inhibit_ipv4\":\"true\""),
        "internal network: {net}"
    );
    assert_eq!(
        code_of(&out, "uid").as_deref(),
        Some("1000"),
        "output:\n{out}"
    );
    assert_eq!(
        code_of(&out, "CapEff").as_deref(),
        Some("0000000000000000"),
        "output:\n{out}"
    );
    assert_eq!(
        code_of(&out, "CapPrm").as_deref(),
        Some("0000000000000000"),
        "output:\n{out}"
    );
    assert_eq!(
        code_of(&out, "NoNewPrivs").as_deref(),
        Some("1"),
        "output:\n{out}"
    );
    assert!(
        !out.contains("wrote="),
        "the agent wrote outside workspace/tmp/home:\n{out}"
    );
    assert_eq!(
        out.matches("ok=").count(),
        3,
        "workspace, /tmp and $HOME are writable:\n{out}"
    );
    assert!(
        !out.contains("dockersock=present"),
        "Docker socket visible in the agent"
    );
}

/// Check 7: Killing the sidecar mid-run leaves the agent with no egress at all, and `bottle` says so.
#[test]
fn sidecar_death_fails_closed_and_is_reported() {
    require_engine!();
    let w = world();
    let h = home("sidecar-kill");
    let script = format!(
        r#"
echo "$BOTTLE_ID" > /workspace/id
curl -s -o /dev/null -w 'before=%{{http_code}}\n' https://upstream.test/echo
touch /workspace/ready
for i in $(seq 300); do [ -e /workspace/killed ] && break; sleep 0.1; done
curl -s -m 5 -o /dev/null -w 'after=%{{http_code}}\n' https://upstream.test/echo; echo "after_rc=$?"
curl -s -m 5 --noproxy '*' -o /dev/null -w 'noproxy=%{{http_code}}\n' -k https://{ip}/echo; echo "noproxy_rc=$?"
timeout 4 bash -c 'echo > /dev/tcp/{ip}/443' 2>/dev/null && echo direct=connected || echo direct=failed
"#,
        ip = w.upstream_ip
    );
    let child = bottle_cmd(&h)
        .args(["run", "--json", "e2e", "--", "bash", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for_file(&h.workspace.join("ready"), Duration::from_secs(60)),
        "the agent did not start"
    );
    let id = std::fs::read_to_string(h.workspace.join("id"))
        .unwrap()
        .trim()
        .to_string();
    docker_ok(&["kill", &format!("bottle-{id}-sidecar")]);
    std::fs::write(h.workspace.join("killed"), "").unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stderr).to_string();
    let result: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(
        code_of(&out, "before").as_deref(),
        Some("200"),
        "egress worked before the kill:\n{out}"
    );
    assert_ne!(
        code_of(&out, "after_rc").as_deref(),
        Some("0"),
        "egress after the sidecar died:\n{out}"
    );
    assert_ne!(
        code_of(&out, "noproxy_rc").as_deref(),
        Some("0"),
        "direct HTTPS after the sidecar died:\n{out}"
    );
    assert_eq!(
        code_of(&out, "direct").as_deref(),
        Some("failed"),
        "direct TCP after the sidecar died:\n{out}"
    );
    assert!(
        out.contains("the sidecar (proxy) stopped"),
        "bottle reports the dead sidecar:\n{out}"
    );
    assert!(
        result["sidecar_exit"].is_i64(),
        "result object records the sidecar exit: {result}"
    );
    let (c, n) = wait_gone(&id, Duration::from_secs(20));
    assert!(c.is_empty() && n.is_empty());
}

/// Check 8a: `kill -9` of the launcher leaves objects behind; `bottle reap` removes every one.
#[test]
fn reap_after_launcher_kill() {
    require_engine!();
    let h = home("reap");
    let mut child = bottle_cmd(&h)
        .args([
            "run",
            "e2e",
            "--",
            "bash",
            "-c",
            "echo $BOTTLE_ID > /workspace/id; sleep 120",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for_file(&h.workspace.join("id"), Duration::from_secs(60)),
        "the agent did not start"
    );
    let id = std::fs::read_to_string(h.workspace.join("id"))
        .unwrap()
        .trim()
        .to_string();
    child.kill().unwrap(); // SIGKILL: no teardown
    child.wait().unwrap();
    // The sidecar's lifeline (its stdin, held by the launcher) is cut: it stops on its own, so
    // no proxy holding the bottle's secrets outlives its launcher.
    let sidecar = format!("bottle-{id}-sidecar");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = docker(&["inspect", "-f", "{{.State.Running}}", &sidecar]);
        let running = String::from_utf8_lossy(&o.stdout).trim() == "true";
        if !running {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sidecar still runs 10 s after its launcher was killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Before the reap: the objects outlive the launcher, and `list` marks the bottle stale.
    // (Another test's `bottle run` reaps at start too, so they may already be going.)
    let (c, n) = objects_of(&id);
    assert!(
        c.len() <= 2 && n.len() <= 1,
        "unexpected objects {c:?} {n:?}"
    );
    let list = bottle_cmd(&h).args(["list", "--json"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    if let Some(row) = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
    {
        assert_eq!(row["live"], false, "list marks the bottle stale: {row}");
    }
    let o = bottle_cmd(&h).arg("reap").output().unwrap();
    assert!(o.status.success());
    let (c, n) = objects_of(&id);
    assert!(c.is_empty() && n.is_empty(), "reap left {c:?} {n:?}");
    // Another test's reap may be removing this bottle at the same moment: allow it to finish.
    assert!(
        wait_removed(&runtime_base().join(&id), Duration::from_secs(10)),
        "reap removed the runtime dir"
    );
}

/// Check 8b: Eight bottles in parallel: each reaches the upstream, sees only its own workspace, and
/// leaves nothing behind.
#[test]
fn eight_bottles_in_parallel() {
    require_engine!();
    let homes: Vec<Home> = (0..8).map(|i| home(&format!("par{i}"))).collect();
    let t = Instant::now();
    let children: Vec<_> = homes
        .iter()
        .enumerate()
        .map(|(i, h)| {
            std::fs::write(h.workspace.join(format!("mine-{i}")), "").unwrap();
            let script = format!(
                "echo \"files=$(ls /workspace | tr '\\n' ' ')\"; curl -s -o /dev/null -w 'code=%{{http_code}}\\n' 'https://upstream.test/echo?bottle={i}'"
            );
            bottle_cmd(h)
                .args(["run", "--json", "e2e", "--", "bash", "-c", &script])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    let mut report = String::new();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stderr).to_string();
        let res: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        assert!(o.status.success(), "bottle {i} failed: {out}");
        assert_eq!(
            code_of(&out, "files").as_deref(),
            Some(format!("mine-{i}").as_str()),
            "bottle {i} sees only its workspace"
        );
        let _ = writeln!(report, "bottle {i}: code={:?}", code_of(&out, "code"));
        assert_eq!(
            code_of(&out, "code").as_deref(),
            Some("200"),
            "bottle {i} egress:\n{out}"
        );
        ids.push(res["bottle_id"].as_str().unwrap_or_default().to_string());
    }
    eprintln!(
        "8 parallel bottles in {:.1}s\n{report}",
        t.elapsed().as_secs_f64()
    );
    let mut uniq = ids.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 8, "distinct bottle ids: {ids:?}");
    for id in &ids {
        let (c, n) = wait_gone(id, Duration::from_secs(30));
        assert!(c.is_empty() && n.is_empty(), "bottle {id} left {c:?} {n:?}");
    }
}

/// Runs `bottle start e2e` under `script` (a pseudo-terminal of 91x27), types `input` once the
/// agent shell runs, and returns (exit code, terminal output).
fn start_with_input(h: &Home, input: &'static [u8]) -> (i32, String) {
    let _ = std::fs::remove_file(h.workspace.join("started"));
    let cmd = format!(
        "stty cols 91 rows 27; exec {} start e2e -- bash -c 'touch /workspace/started; exec bash --norc'",
        bottle_bin()
    );
    let mut script = std::process::Command::new("script");
    pin_images(&mut script);
    let mut child = script
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(&h.workspace)
        .env("BOTTLE_HOME", &h.home)
        .env("BOTTLE_EGRESS_NETWORK", &world().net)
        .env("BOTTLE_E2E_TOKEN", &h.secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`script` (bsdutils) runs `bottle start` in a pseudo-terminal");
    let mut stdin = child.stdin.take().unwrap();
    let started = h.workspace.join("started");
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        assert!(
            wait_for_file(&started, Duration::from_secs(60)),
            "the agent shell did not start"
        );
        std::thread::sleep(Duration::from_millis(500));
        stdin.write_all(input).unwrap();
        stdin.flush().unwrap();
        stdin // kept open until the session ends
    });
    let o = child.wait_with_output().unwrap();
    drop(writer.join().unwrap());
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).to_string(),
    )
}

/// `bottle start` gives an interactive TTY sized like the caller's terminal, exits with the
/// agent's code and removes everything; the detach keys end the bottle as well.
#[test]
fn start_interactive_tty_and_detach() {
    require_engine!();
    let h = home("tty");
    let (code, out) = start_with_input(
        &h,
        b"stty size; echo hello-$((6*7)); echo $BOTTLE_ID > /workspace/id; exit 5\r",
    );
    assert_eq!(code, 5, "exit code of the agent shell; terminal:\n{out}");
    assert!(
        out.contains("27 91"),
        "the agent's tty has the caller's size; terminal:\n{out}"
    );
    assert!(out.contains("hello-42"), "terminal:\n{out}");
    let id = std::fs::read_to_string(h.workspace.join("id"))
        .unwrap()
        .trim()
        .to_string();
    let (c, n) = objects_of(&id);
    assert!(c.is_empty() && n.is_empty(), "start left {c:?} {n:?}");

    let (code, out) = start_with_input(&h, b"echo $BOTTLE_ID > /workspace/id\r\x10\x11");
    assert!(
        out.contains("detached"),
        "ctrl-p,ctrl-q detaches; terminal:\n{out}"
    );
    assert_ne!(code, 0);
    let id = std::fs::read_to_string(h.workspace.join("id"))
        .unwrap()
        .trim()
        .to_string();
    let (c, n) = objects_of(&id);
    assert!(c.is_empty() && n.is_empty(), "detach left {c:?} {n:?}");
}

/// `bottle list`, `bottle logs` and `bottle end` on a running bottle.
#[test]
fn list_logs_end() {
    require_engine!();
    let h = home("end");
    let child = bottle_cmd(&h)
        .args([
            "run",
            "--json",
            "e2e",
            "--",
            "bash",
            "-c",
            "echo $BOTTLE_ID > /workspace/id; echo hello-from-agent; sleep 120",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for_file(&h.workspace.join("id"), Duration::from_secs(60)),
        "the agent did not start"
    );
    let id = std::fs::read_to_string(h.workspace.join("id"))
        .unwrap()
        .trim()
        .to_string();
    let list = bottle_cmd(&h).args(["list", "--json"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .expect("the bottle is listed");
    assert_eq!(row["live"], true);
    assert_eq!(row["state"], "running");
    assert_eq!(row["bottle"], "e2e");
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let o = bottle_cmd(&h).args(["logs", &id]).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        if text.contains("hello-from-agent") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(logs.contains("hello-from-agent"), "bottle logs: {logs}");
    let t = Instant::now();
    let o = bottle_cmd(&h).args(["end", &id]).output().unwrap();
    assert!(
        o.status.success(),
        "bottle end: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let run = child.wait_with_output().unwrap();
    assert_eq!(run.status.code(), Some(143), "the launcher ends on SIGTERM");
    assert!(t.elapsed() < Duration::from_secs(20));
    let (c, n) = objects_of(&id);
    assert!(c.is_empty() && n.is_empty(), "end left {c:?} {n:?}");
    let o = bottle_cmd(&h).args(["end", &id]).output().unwrap();
    assert!(!o.status.success(), "ending an unknown bottle is an error");
}

/// `workspace = "copy"`: the agent works on a copy, the user's directory is never written, and
/// the copy (with the agent's changes) is kept after the bottle ends and named in the result.
#[test]
fn copy_workspace_keeps_the_agents_changes() {
    require_engine!();
    let h = home("copy");
    std::fs::write(h.workspace.join("seed.txt"), "seed\n").unwrap();
    std::fs::write(
        h.home.join("bottles/e2e-copy.toml"),
        "extends = \"e2e\"\nworkspace = \"copy\"\n",
    )
    .unwrap();
    let data = h.home.join("data");
    let o = bottle_cmd(&h)
        .env("BOTTLE_DATA_DIR", &data)
        .args(["run", "--json", "e2e-copy", "--", "bash", "-c"])
        .arg("cat /workspace/seed.txt && echo changed > /workspace/new.txt && echo more >> /workspace/seed.txt")
        .output()
        .expect("running bottle");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let copy = std::path::PathBuf::from(
        result["workspace_copy"]
            .as_str()
            .unwrap_or_else(|| panic!("result names the copy: {result}")),
    );
    assert!(
        copy.starts_with(data.join("workspaces")),
        "{}",
        copy.display()
    );
    assert!(
        stderr.contains("seed"),
        "the copy holds the workspace: {stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(copy.join("new.txt")).unwrap(),
        "changed\n"
    );
    assert_eq!(
        std::fs::read_to_string(copy.join("seed.txt")).unwrap(),
        "seed\nmore\n"
    );
    assert!(
        !h.workspace.join("new.txt").exists(),
        "the user's directory was written"
    );
    assert_eq!(
        std::fs::read_to_string(h.workspace.join("seed.txt")).unwrap(),
        "seed\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("workspaces"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "kept copies are private");
}
