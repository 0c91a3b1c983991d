//! Model sidecars (`[[model]]`): the test-upstream image's fake model server
//! (`server.py --model-server`, `images/test-upstream/fake_model.py`) as a model on the bottle's
//! internal network, reached by the agent by name with the environment the launcher set;
//! sealed (no workspace, no secret, internal network only, no route off the box); a model that
//! never becomes ready fails the start and leaves nothing.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::require_engine;

fn value_of(out: &str, key: &str) -> Option<String> {
    out.lines().find_map(|l| {
        l.strip_prefix(&format!("{key}="))
            .map(|v| v.trim().to_string())
    })
}

/// Writes bottle `name` (extending `e2e`) with one fake model `llm` and the given extra env.
pub(crate) fn model_bottle(h: &Home, name: &str, env: &str, ready: &str) {
    let toml = format!(
        r#"extends = "e2e"

[[model]]
name = "llm"
engine = "openai"
model = "fake-model"
image = "{image}"
args = ["--model-server"]
env = {{ {env} }}
{ready}
"#,
        image = images().upstream
    );
    std::fs::write(h.home.join(format!("bottles/{name}.toml")), toml).unwrap();
}

#[test]
fn models_agent_reaches_the_model_by_name_and_the_model_is_sealed() {
    require_engine!();
    let w = world();
    let h = home("model");
    let answer = format!("scripted-{}", rand_hex(8));
    model_bottle(
        &h,
        "e2e-model",
        &format!("FAKE_MODEL_ANSWER = \"{answer}\", FAKE_MODEL_READY_AFTER = \"3\""),
        "",
    );
    let script = r#"
echo "id=$BOTTLE_ID"
echo "base=$OPENAI_BASE_URL"
echo "hosts=$(grep -c ' llm$\|	llm$' /etc/hosts)"
echo "dns=$(dig +short llm)"
echo "hosts_ip=$(awk '$2 == "llm" {print $1}' /etc/hosts)"
echo "models=$(curl -sS -m 10 "$OPENAI_BASE_URL/models" | tr -d '\n ')"
curl -sS -m 10 "$OPENAI_BASE_URL/chat/completions" -H 'content-type: application/json' \
  -d '{"model":"fake-model","messages":[{"role":"user","content":"hi"}]}' > /tmp/chat
echo "chat=$(tr -d '\n' < /tmp/chat)"
touch /workspace/ready
for i in $(seq 600); do [ -e /workspace/checked ] && break; sleep 0.1; done
"#;
    let child = bottle_cmd(&h)
        .args(["run", "--json", "e2e-model", "--", "bash", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = wait_for_file(&h.workspace.join("ready"), Duration::from_secs(120));
    // While the bottle runs: what the model container is.
    let ids = docker_ok(&[
        "ps",
        "-q",
        "--filter",
        "label=io.bottle.role=model",
        "--filter",
        "label=io.bottle.bottle=e2e-model",
        "--filter",
        "label=io.bottle.model=llm",
    ]);
    let mut checks = Vec::new();
    let mut model = String::new();
    if ready {
        model = ids.lines().next().unwrap_or_default().to_string();
        let inspect = docker_ok(&["inspect", &model]);
        let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        let c = &v[0];
        checks.push((
            "no secret in inspect",
            !inspect.contains(&h.secret),
            String::new(),
        ));
        checks.push((
            "capabilities dropped, no new privileges, a process cap",
            c["HostConfig"]["CapDrop"] == serde_json::json!(["ALL"])
                && c["HostConfig"]["SecurityOpt"] == serde_json::json!(["no-new-privileges:true"])
                && c["HostConfig"]["PidsLimit"] == 4096,
            c["HostConfig"].to_string(),
        ));
        let mounts = c["Mounts"].as_array().cloned().unwrap_or_default();
        checks.push(("no mounts", mounts.is_empty(), format!("{mounts:?}")));
        checks.push((
            "no workspace",
            !inspect.contains(&h.workspace.display().to_string()),
            String::new(),
        ));
        let nets: Vec<String> = c["NetworkSettings"]["Networks"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        checks.push((
            "the models network only (not the bottle network with the proxy)",
            nets.len() == 1 && nets[0].ends_with("-mod"),
            format!("{nets:?}"),
        ));
        let environ = docker(&[
            "exec",
            &model,
            "sh",
            "-c",
            "cat /proc/[0-9]*/environ | tr '\\0' '\\n'",
        ]);
        let environ = String::from_utf8_lossy(&environ.stdout).to_string();
        checks.push((
            "no secret in /proc/*/environ",
            environ.contains("FAKE_MODEL_ANSWER") && !environ.contains(&h.secret),
            String::new(),
        ));
        // No route off the box: the upstream and every host address.
        let mut targets = vec![
            format!("{}:443", w.upstream_ip),
            format!("{}:80", w.upstream_ip),
        ];
        // Nor the proxy, its DNS or the git gate: the sidecar's addresses on both networks.
        let bid = c["Config"]["Labels"]["io.bottle.id"]
            .as_str()
            .unwrap_or_default();
        let sidecar_ips = docker_ok(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            &format!("bottle-{bid}-sidecar"),
        ]);
        for ip in sidecar_ips.split_whitespace() {
            for port in [3128, 3129, 53, 8418] {
                targets.push(format!("{ip}:{port}"));
            }
        }
        assert!(
            sidecar_ips.split_whitespace().count() >= 2,
            "the sidecar is on the bottle and models networks: {sidecar_ips}"
        );
        // Nor another bottle: a second one, spawned now, its agent and its proxy.
        let other = spawn_shell(&h, &[]);
        let other_id = other["id"].as_str().unwrap_or_default().to_string();
        let _other_guard = KillOnDrop(other_id.clone());
        let other_ips = docker_ok(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=io.bottle.id={other_id}"),
        ])
        .split_whitespace()
        .map(|c| {
            docker_ok(&[
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                c,
            ])
        })
        .collect::<Vec<_>>()
        .join(" ");
        checks.push((
            "a second bottle runs (agent and sidecar)",
            !other_id.is_empty() && other_ips.split_whitespace().count() >= 3,
            other_ips.clone(),
        ));
        for ip in other_ips.split_whitespace() {
            for port in [3128, 53, 22, 80] {
                targets.push(format!("{ip}:{port}"));
            }
        }
        let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let open_port = listener.local_addr().unwrap().port();
        for ip in host_ips() {
            targets.push(format!("{ip}:{open_port}"));
        }
        let py = format!(
            r#"import socket
for t in {targets:?}:
    ip, port = t.rsplit(":", 1)
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((ip, int(port))); print("connected", t)
    except Exception as e:
        print("failed", t, type(e).__name__)
"#
        );
        let o = docker(&["exec", &model, "python3", "-c", &py]);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        checks.push((
            "no route off the box",
            o.status.success() && !out.contains("connected") && out.contains("failed"),
            out,
        ));
        drop(listener);
        // `bottle list` names the model; pause/resume freeze and thaw it with the agent.
        let id = c["Config"]["Labels"]["io.bottle.id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let list = bottle_cmd(&h).args(["list", "--json"]).output().unwrap();
        let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap_or_default();
        let row = rows
            .as_array()
            .and_then(|r| r.iter().find(|r| r["id"] == id.as_str()).cloned())
            .unwrap_or_default();
        checks.push((
            "listed with its model",
            row["models"] == serde_json::json!(["llm (running)"]),
            row.to_string(),
        ));
        let state = |c: &str| docker_ok(&["inspect", "-f", "{{.State.Status}}", c]);
        let p = bottle_cmd(&h).args(["pause", &id]).output().unwrap();
        let paused = state(&model);
        let r = bottle_cmd(&h).args(["resume", &id]).output().unwrap();
        let resumed = state(&model);
        checks.push((
            "pause/resume freeze the model",
            p.status.success() && r.status.success() && paused == "paused" && resumed == "running",
            format!("{paused} {resumed} {}", String::from_utf8_lossy(&p.stderr)),
        ));
    }
    std::fs::write(h.workspace.join("checked"), "").unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(ready, "the agent did not start:\n{out}");
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert_eq!(
        value_of(&out, "base").as_deref(),
        Some("http://llm:8000/v1"),
        "the launcher's wiring:\n{out}"
    );
    assert_eq!(value_of(&out, "hosts").as_deref(), Some("1"), "{out}");
    assert!(
        value_of(&out, "dns")
            .is_some_and(|d| !d.is_empty() && Some(d) == value_of(&out, "hosts_ip")),
        "the sidecar's DNS answers the model's name (as /etc/hosts does): {out}"
    );
    assert!(
        value_of(&out, "models").is_some_and(|m| m.contains("\"fake-model\"")),
        "/v1/models by name:\n{out}"
    );
    assert!(
        value_of(&out, "chat").is_some_and(|m| m.contains(&answer)),
        "/v1/chat/completions answers the scripted answer:\n{out}"
    );
    assert!(
        out.contains("bottle: model llm ready"),
        "readiness is reported:\n{out}"
    );
    for (what, ok, detail) in &checks {
        assert!(ok, "model container: {what}: {detail}");
    }
    assert_eq!(checks.len(), 10, "container {model:?} checked");
    let id = value_of(&out, "id").unwrap();
    let (c, n) = wait_gone(&id, Duration::from_secs(30));
    assert!(
        c.is_empty() && n.is_empty(),
        "objects left after run: {c:?} {n:?}"
    );
}

#[test]
fn models_a_model_that_never_becomes_ready_fails_the_start_and_leaves_nothing() {
    require_engine!();
    let h = home("model-never");
    let name = format!("e2e-never-{}", rand_hex(6));
    model_bottle(
        &h,
        &name,
        "FAKE_MODEL_NEVER_READY = \"1\"",
        "ready = { timeout = \"5s\" }",
    );
    let t = Instant::now();
    let o = bottle_cmd(&h)
        .args(["run", "--json", &name, "--", "touch", "/workspace/ran"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stderr).to_string();
    assert_ne!(o.status.code(), Some(0), "{out}");
    assert!(t.elapsed() < Duration::from_secs(90), "{out}");
    assert!(
        out.contains("model \"llm\"") && out.contains("not ready") && out.contains("5s"),
        "the error names the model and its timeout:\n{out}"
    );
    assert!(
        out.contains("\"event\": \"loading\"") || out.contains("\"event\":\"loading\""),
        "the model's last log lines are shown:\n{out}"
    );
    assert!(
        out.contains("waiting for model llm"),
        "progress while waiting:\n{out}"
    );
    assert!(!h.workspace.join("ran").exists(), "the agent never ran");
    let f = format!("label=io.bottle.bottle={name}");
    let c = docker_ok(&["ps", "-aq", "--filter", &f]);
    let n = docker_ok(&["network", "ls", "-q", "--filter", &f]);
    assert!(
        c.is_empty() && n.is_empty(),
        "objects left after a failed start: {c:?} {n:?}"
    );
}

#[test]
fn models_egress_routes_serve_the_model_alone_with_its_credential_and_are_audited() {
    require_engine!();
    let w = world();
    let h = home("model-egress");
    let name = format!("e2e-megress-{}", rand_hex(6));
    let hf = format!("hf_e2e{}", rand_hex(24));
    // Marks this test's requests in the upstream's log (shared by every test of the run).
    let mark = rand_hex(12);
    // The model fetches its "weights" from the upstream at start-up through its own route (a
    // credentialed one); the agent has no route at all.
    let toml = format!(
        r#"description = "e2e model egress"
image = "shell"

[resources]
cpus = 1
memory = "512m"
pids = 256

[proxy]
extra_roots = [{ca:?}]

[secrets]
HF_TOKEN = {{ env = "BOTTLE_E2E_HF" }}

[[model]]
name = "llm"
engine = "openai"
model = "fake-model"
image = "{image}"
args = ["--model-server"]
secrets = ["HF_TOKEN"]
env = {{ FAKE_MODEL_FETCH = "https://upstream.test/echo?weights={mark}" }}

[[model.egress]]
id = "weights"
host = "upstream.test"
allow_private = ["{ip}/32"]
auth = {{ scheme = "Bearer", secret = "HF_TOKEN" }}
"#,
        ca = w.upstream_ca,
        ip = w.upstream_ip,
        image = images().upstream
    );
    std::fs::write(h.home.join(format!("bottles/{name}.toml")), toml).unwrap();
    let script = r#"
echo "id=$BOTTLE_ID"
echo "weights=$(curl -sS -m 10 http://llm:8000/weights | tr -d '\n')"
# The model's route through the agent's own proxy: not the agent's.
# curl's messages go to /dev/null: the agent's stderr interleaves with these lines.
echo "via_proxy=$(curl -s -m 10 -o /dev/null -w '%{http_connect}' https://upstream.test/echo?agent=MARK1 2>/dev/null)"
# The model egress proxy itself (the sidecar's .2 on the models network, the model is .4).
m=$(awk '$2 == "llm" {print $1}' /etc/hosts)
sc="${m%.*}.$(( ${m##*.} - 2 ))"
curl -sS -m 10 -x "http://$sc:3129" -o /dev/null http://upstream.test/?agent=MARK2 2>/dev/null; echo "direct_rc=$?"
curl -sS -m 10 -x "http://$sc:3129" -o /dev/null https://upstream.test/?agent=MARK3 2>/dev/null; echo "direct_tls_rc=$?"
echo "agent_env_hf=$(env | grep -c hf_e2e)"
touch /workspace/ready
for i in $(seq 600); do [ -e /workspace/checked ] && break; sleep 0.1; done
"#;
    let script = script.replace("MARK", &mark);
    let child = bottle_cmd(&h)
        .env("BOTTLE_E2E_HF", &hf)
        .args(["run", "--json", &name, "--", "bash", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = wait_for_file(&h.workspace.join("ready"), Duration::from_secs(120));
    let mut checks = Vec::new();
    if ready {
        let model = docker_ok(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=io.bottle.bottle={name}"),
            "--filter",
            "label=io.bottle.model=llm",
        ]);
        let inspect = docker_ok(&["inspect", &model]);
        checks.push((
            "no secret in the model's inspect",
            !inspect.contains(&hf) && inspect.contains("HF_TOKEN=bottle-placeholder-HF_TOKEN"),
            String::new(),
        ));
        let environ = docker(&[
            "exec",
            &model,
            "sh",
            "-c",
            "cat /proc/[0-9]*/environ | tr '\\0' '\\n'",
        ]);
        let environ = String::from_utf8_lossy(&environ.stdout).to_string();
        checks.push((
            "no secret in the model's /proc/*/environ, its proxy set",
            environ.contains("HTTPS_PROXY=http://") && !environ.contains(&hf),
            String::new(),
        ));
        // Anything but its routes is refused, through its own proxy too.
        let py = "import urllib.request\ntry:\n    urllib.request.urlopen('https://elsewhere.test/', timeout=10); print('reached')\nexcept Exception as e:\n    print('refused', e)\n";
        let o = docker(&["exec", &model, "python3", "-c", py]);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        checks.push((
            "the model's proxy refuses other hosts",
            out.contains("refused") && out.contains("403"),
            out,
        ));
        let inspect_all = docker_ok(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.bottle.bottle={name}"),
        ]);
        let all: Vec<&str> = inspect_all.split_whitespace().collect();
        let mut args = vec!["inspect"];
        args.extend(all.iter().copied());
        let every = docker_ok(&args);
        checks.push((
            "no secret in any container's inspect",
            all.len() >= 3 && !every.contains(&hf),
            format!("{all:?}"),
        ));
    }
    std::fs::write(h.workspace.join("checked"), "").unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stderr).to_string();
    let result: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert!(ready, "the agent did not start:\n{out}");
    assert_eq!(o.status.code(), Some(0), "{out}");
    for (what, ok, detail) in &checks {
        assert!(ok, "{what}: {detail}");
    }
    assert_eq!(checks.len(), 4);
    // The model's fetch reached the upstream with the real token injected (the upstream
    // echoes credentials as digests).
    let weights = value_of(&out, "weights").unwrap_or_default();
    let want = format!(
        "sha256:{}",
        crate::agents::sha256_hex(&format!("Bearer {hf}"))
    );
    assert!(
        weights.contains("\"status\": 200") && weights.contains(&want),
        "the model fetched through its route with the credential: {weights}\n{out}"
    );
    assert!(
        !out.contains(&hf),
        "the real token is in the launcher's output"
    );
    // The agent cannot use the model's routes, neither through its proxy nor directly.
    assert_eq!(value_of(&out, "via_proxy").as_deref(), Some("403"), "{out}");
    for key in ["direct_rc", "direct_tls_rc"] {
        let rc = value_of(&out, key).unwrap_or_default();
        assert!(rc != "0" && !rc.is_empty(), "{key}: {out}");
    }
    assert_eq!(
        value_of(&out, "agent_env_hf").as_deref(),
        Some("0"),
        "{out}"
    );
    let logs = docker_ok(&["logs", &w.upstream]);
    assert!(
        logs.contains(&format!("/echo?weights={mark}")) && !logs.contains(&format!("agent={mark}")),
        "only the model's request reached the upstream"
    );
    // Audited apart: the model's allow, its deny, and the agent knocking on its proxy.
    let audit = &result["audit"];
    assert!(
        audit["models"]["allowed"].as_u64().unwrap_or(0) >= 1
            && audit["models"]["denied"].as_u64().unwrap_or(0) >= 1
            && audit["models"]["refused"].as_u64().unwrap_or(0) >= 2
            && audit["allowed"] == 0,
        "audit: {result}"
    );
    let id = value_of(&out, "id").unwrap();
    let (c, n) = wait_gone(&id, Duration::from_secs(30));
    assert!(
        c.is_empty() && n.is_empty(),
        "objects left after run: {c:?} {n:?}"
    );
}

/// Runs the real agent CLI `template` (image `image`) with `--prompt "say hi"` in a bottle with
/// no route at all and one fake model sidecar, and checks that it printed the model's scripted
/// answer with no request through the proxy: the only thing it can reach is the model.
fn agent_answers_from_the_model(template: &str, image: &str, extra_env: &str) {
    let h = home(&format!("model-{template}"));
    let answer = format!("local-answer-{}", rand_hex(8));
    let toml = format!(
        r#"description = "e2e {template} on a local model"
image = "{template}"

[resources]
cpus = 1
memory = "2g"
pids = 512
{extra_env}
[[model]]
name = "llm"
engine = "openai"
model = "fake-model"
image = "{model_image}"
args = ["--model-server"]
env = {{ FAKE_MODEL_ANSWER = "{answer}" }}
"#,
        model_image = images().upstream
    );
    let bottle = format!("{template}-model");
    std::fs::write(h.home.join(format!("bottles/{bottle}.toml")), toml).unwrap();
    let o = bottle_cmd(&h)
        .env("BOTTLE_AGENT_IMAGE", image)
        .args(["run", "--json", &bottle, "--prompt", "say hi"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stderr).to_string();
    let result: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{template} failed: {out}\n{result}"
    );
    let res = &result["agent_result"];
    assert!(
        res["result"].as_str().unwrap_or_default().contains(&answer),
        "the model's scripted answer: {result}\n{out}"
    );
    assert_eq!(
        result["audit"]["allowed"].as_u64().unwrap_or(0),
        0,
        "no egress through the proxy at all: {result}"
    );
}

#[test]
fn models_claude_code_answers_from_the_model_sidecar_with_no_egress() {
    require_engine!();
    let (claude, _) = crate::agents::agent_images();
    // `claude -p` against ANTHROPIC_BASE_URL=http://llm:8000 (the Messages API).
    agent_answers_from_the_model(
        "claude",
        claude,
        "\n[env]\nDISABLE_TELEMETRY = \"1\"\nDISABLE_ERROR_REPORTING = \"1\"\nDISABLE_AUTOUPDATER = \"1\"\nCLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\"\n",
    );
}

#[test]
fn models_codex_answers_from_the_model_sidecar_with_no_egress() {
    require_engine!();
    let (_, codex) = crate::agents::agent_images();
    // `codex exec` through the init's `bottle-model` provider (the Responses API).
    agent_answers_from_the_model("codex", codex, "");
}

/// Host-endpoint mode (`manifests/bottles/local-model.toml`): a model server already running on
/// the host is reached through the proxy, on one route allowing that one private address and
/// port — not another port of the host, not another host address, and never directly.
#[test]
fn models_host_endpoint_mode_reaches_the_host_server_only_through_its_route() {
    require_engine!();
    let w = world();
    let h = home("model-host");
    // The host as the sidecar sees it: the gateway of its egress network (the engine's
    // default, the subnet's first address, when the network was created with a subnet only).
    let cfg = docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}} {{(index .IPAM.Config 0).Subnet}}",
        &w.net,
    ]);
    let gw = match cfg.split_whitespace().collect::<Vec<_>>()[..] {
        [gw, _] => gw.to_string(),
        [subnet] => {
            let base: std::net::Ipv4Addr = subnet.split('/').next().unwrap().parse().unwrap();
            std::net::Ipv4Addr::from(u32::from(base) + 1).to_string()
        }
        _ => panic!("no IPAM config on {}: {cfg:?}", w.net),
    };
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Another listener on the host, which no route allows.
    let other = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    let answer = format!("host-answer-{}", rand_hex(8));
    let server = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../images/test-upstream/server.py"
    );
    let mut srv = std::process::Command::new("python3")
        .args([server, "--model-server", "--http-port", &port.to_string()])
        .env("FAKE_MODEL_ANSWER", &answer)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the host model server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stdout = srv.stdout.take().unwrap();
    let _kill = Kill(&mut srv);
    let toml = format!(
        r#"extends = "e2e"

[[route]]
id = "host-model"
host = "{gw}"
ports = [{port}]
allow_private = ["{gw}/32"]
dlp = true

[env]
OPENAI_BASE_URL = "http://{gw}:{port}/v1"
"#
    );
    std::fs::write(h.home.join("bottles/e2e-hostmodel.toml"), toml).unwrap();
    let others: Vec<String> = host_ips().into_iter().filter(|ip| *ip != gw).collect();
    let mut script = String::from(
        r#"
echo "models=$(curl -sS -m 10 "$OPENAI_BASE_URL/models" | tr -d '\n ')"
echo "chat=$(curl -sS -m 10 "$OPENAI_BASE_URL/chat/completions" -d '{"messages":[]}' | tr -d '\n')"
"#,
    );
    script.push_str(&format!(
        "echo \"other_port=$(curl -sS -m 10 -o /dev/null -w '%{{http_code}}' http://{gw}:{other_port}/)\"\n"
    ));
    for ip in &others {
        script.push_str(&format!(
            "echo \"other_ip=$(curl -sS -m 10 -o /dev/null -w '%{{http_code}}' http://{ip}:{port}/v1/models)\"\n"
        ));
    }
    script.push_str(
        "curl -sS -m 5 --noproxy '*' -o /dev/null \"$OPENAI_BASE_URL/models\" 2>/dev/null; echo \"direct_rc=$?\"\n",
    );
    let o = bottle_cmd(&h)
        .args([
            "run",
            "--json",
            "e2e-hostmodel",
            "--",
            "bash",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    drop(other);
    drop(_kill);
    let out = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        value_of(&out, "models").is_some_and(|m| m.contains("\"fake-model\"")),
        "the host's server through the route: {out}"
    );
    assert!(
        value_of(&out, "chat").is_some_and(|m| m.contains(&answer)),
        "{out}"
    );
    assert_eq!(
        value_of(&out, "other_port").as_deref(),
        Some("403"),
        "another port of the host: {out}"
    );
    let refused = out
        .lines()
        .filter(|l| l.starts_with("other_ip="))
        .collect::<Vec<_>>();
    assert_eq!(refused.len(), others.len(), "{out}");
    assert!(
        refused.iter().all(|l| *l == "other_ip=403"),
        "other host addresses: {refused:?}"
    );
    let rc = value_of(&out, "direct_rc").unwrap_or_default();
    assert!(rc != "0" && !rc.is_empty(), "never directly: {out}");
    // Every request the host server saw came from the sidecar (its egress address).
    drop(srv.stdout.take());
    let mut log = String::new();
    std::io::Read::read_to_string(&mut { stdout }, &mut log).ok();
    let clients: std::collections::BTreeSet<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "request")
        .filter_map(|v| v["client"].as_str().map(str::to_string))
        .filter(|c| c != "127.0.0.1")
        .collect();
    assert_eq!(clients.len(), 1, "one client, the sidecar: {clients:?}");
}
