//! The git gate in real bottles: the agent's git, with the remote's original URL, reaches a
//! real smart-HTTP upstream (`git http-backend` behind TLS and a token check, on a network of
//! the test's own) only through the sidecar's gate, which injects the token, mirrors fetches
//! fail-closed and scans pushes before forwarding them.

use std::time::{Duration, Instant};

use crate::agents::Provider;
use crate::harness::*;
use crate::require_engine;

const UPSTREAM: &str = "git.upstream.test";

/// A bottle `gated` in `h` whose one git remote `origin` is the upstream's `repo.git`,
/// authenticated with the bottle's secret.
fn gated_home(h: &Home, up: &Provider, extra: &str) {
    let toml = format!(
        r#"description = "e2e git gate"
image = "shell"
workspace = "bind"

[resources]
cpus = 1
memory = "512m"
pids = 256

[proxy]
extra_roots = [{ca:?}]

[secrets]
GIT_TOKEN = {{ env = "BOTTLE_E2E_TOKEN" }}

[[git.remote]]
name = "origin"
url = "https://{UPSTREAM}/git/repo.git"
secret = "GIT_TOKEN"
allow_private = ["{ip}/32"]
{extra}
"#,
        ca = up.ca,
        ip = up.ip,
    );
    std::fs::write(h.home.join("bottles/gated.toml"), toml).unwrap();
}

/// `bottle run --json gated -- bash -c <script>` on the upstream's network, started.
fn spawn_gated(h: &Home, up: &Provider, script: &str) -> std::process::Child {
    bottle_cmd(h)
        .env("BOTTLE_EGRESS_NETWORK", &up.net)
        .env_remove("BOTTLE_SIDECAR_IMAGE")
        .args(["run", "--json", "gated", "--", "bash", "-c", script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running bottle")
}

/// Waits for a spawned run.
fn finish(child: std::process::Child) -> Run {
    let o = child.wait_with_output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        result: serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null),
        stderr: String::from_utf8_lossy(&o.stderr).to_string(),
    }
}

/// The value after `KEY=` on a line of `out`.
fn value_of<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("{key}=");
    out.lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
}

/// Clone, a clean push (upstream has it), a push holding an AWS key (rejected with the commit,
/// path and rule, upstream unchanged), and the credential nowhere in the agent; then with the
/// upstream gone, fetch fails closed.
#[test]
fn git_gate_clone_clean_push_secret_push_rejected_and_upstream_down_fails_closed() {
    require_engine!();
    let h = home("gitgate");
    let up = Provider::start_with(UPSTREAM, &[format!("UPSTREAM_GIT_TOKEN={}", h.secret)]);
    gated_home(&h, &up, "");
    let key = format!("AKIA{}", "Z7QK4M2XW5RTY3PV");
    let script = format!(
        r#"cd /tmp && git clone -q https://{UPSTREAM}/git/repo.git r 2>&1; echo CLONE_RC=$?
cd r && echo README=$(cat README)
git config user.name agent && git config user.email agent@bottle.invalid
echo clean > clean.txt && git add clean.txt && git commit -qm clean
git push origin HEAD:main > /tmp/p1 2>&1; echo PUSH1_RC=$?; sed 's/^/PUSH1 /' /tmp/p1
echo CLEAN=$(git rev-parse HEAD)
echo "aws_access_key_id = {key}" > leak.txt && git add leak.txt && git commit -qm leak
git push origin HEAD:main > /tmp/p2 2>&1; echo PUSH2_RC=$?; sed 's/^/PUSH2 /' /tmp/p2
echo LEAK=$(git rev-parse HEAD)
git reset -q --hard HEAD~2 && echo other > other.txt && git add other.txt && git commit -qm rewrite
git push -f origin HEAD:main > /tmp/p3 2>&1; echo PUSH3_RC=$?; sed 's/^/PUSH3 /' /tmp/p3
git tag v1 && git push origin v1 > /tmp/p4 2>&1; echo PUSH4_RC=$?; sed 's/^/PUSH4 /' /tmp/p4
# More leaks, each on top of the clean commit, each rejected (values assembled by the shell).
g=ghp; tok="${{g}}_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
case_push() {{ git push origin HEAD:main > /tmp/pc 2>&1; echo "CASE_$1_RC=$?"; sed "s/^/CASE_$1 /" /tmp/pc; git reset -q --hard "$CLEAN_REV"; }}
CLEAN_REV=$(git ls-remote origin refs/heads/main | cut -f1)
git reset -q --hard "$CLEAN_REV"
echo "token = $tok" > gh.txt && git add gh.txt && git commit -qm gh && case_push ghtoken
b=BEGIN; printf -- "-----$b OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACBnmiHqBPTmRwtOkK8b2pDkj63TzZmAwgyMV81acf5gAAAJCxWKLKsVii\n-----END OPENSSH PRIVATE KEY-----\n" > id_ed25519 && git add id_ed25519 && git commit -qm key && case_push privkey
echo fine > m.txt && git add m.txt && git commit -qm "deploy with $tok" && case_push message
printf '\0\1\2%s\0\3' "$tok" > blob.bin && git add blob.bin && git commit -qm bin && case_push binary
python3 -c "import zipfile,sys; z=zipfile.ZipFile('b.zip','w',zipfile.ZIP_DEFLATED); z.writestr('conf/k.env','T='+sys.argv[1]); z.close()" "$tok" && git add b.zip && git commit -qm zip && case_push zip
echo "t=$tok" > tmp.txt && git add tmp.txt && git commit -qm add && git rm -q tmp.txt && git commit -qm remove && case_push addremove
echo "t=$tok # gitleaks:allow" > allow.txt && git add allow.txt && git commit -qm allow && case_push suppressed
echo UPSTREAM_MAIN=$(git ls-remote origin refs/heads/main | cut -f1)
echo AGENT_VIEW_START; env; cat /etc/gitconfig .git/config; echo AGENT_VIEW_END
touch /workspace/part1-done
while [ ! -e /workspace/upstream-down ]; do sleep 0.2; done
git ls-remote origin > /tmp/ls 2>&1; echo LS_RC=$?; sed 's/^/LS /' /tmp/ls
"#
    );
    let child = spawn_gated(&h, &up, &script);
    let part1 = wait_for_file(&h.workspace.join("part1-done"), Duration::from_secs(180));
    let logs = docker_ok(&["logs", &up.container]);
    // Upstream gone (its address stops answering): the fetch fails closed, no stale refs.
    docker_ok(&["stop", "-t", "1", &up.container]);
    std::fs::write(h.workspace.join("upstream-down"), "").unwrap();
    let t = Instant::now();
    let r = finish(child);
    assert!(part1, "the first part did not finish: {}", r.stderr);
    let out = r.stderr.clone();
    assert_eq!(r.code, 0, "bottle run: {out}\nupstream: {logs}");
    assert_eq!(
        value_of(&out, "CLONE_RC"),
        Some("0"),
        "clone through the gate: {out}\nupstream: {logs}"
    );
    assert_eq!(
        value_of(&out, "README"),
        Some("hello from the test upstream"),
        "{out}"
    );
    assert_eq!(value_of(&out, "PUSH1_RC"), Some("0"), "clean push: {out}");
    assert_ne!(value_of(&out, "PUSH2_RC"), Some("0"), "secret push: {out}");
    let push2: Vec<&str> = out.lines().filter(|l| l.starts_with("PUSH2 ")).collect();
    let push2 = push2.join("\n");
    assert!(
        push2.contains("remote:"),
        "the reason reaches the agent: {push2}"
    );
    assert!(
        push2.contains("leak.txt") && push2.to_lowercase().contains("aws"),
        "the finding names path and rule: {push2}"
    );
    assert!(!push2.contains(&key), "never the value: {push2}");
    for (case, needle) in [
        ("ghtoken", "github-pat"),
        ("privkey", "private-key"),
        ("message", "commit"),
        ("binary", "blob.bin"),
        ("zip", "zip:conf/k.env"),
        ("addremove", "tmp.txt"),
        ("suppressed", "allow.txt"),
    ] {
        let key = format!("CASE_{case}");
        assert_ne!(
            value_of(&out, &format!("{key}_RC")),
            Some("0"),
            "{case} must be rejected: {out}"
        );
        let lines: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with(&format!("{key} ")))
            .collect();
        let text = lines.join("\n");
        assert!(
            text.contains("remote:") && text.contains(needle),
            "{case}: the reason names {needle}: {text}"
        );
        assert!(
            !text.contains("A1b2C3d4E5f6G7h8I9j0"),
            "{case}: never the value"
        );
    }
    for (n, what) in [("PUSH3", "force"), ("PUSH4", "tag")] {
        assert_ne!(
            value_of(&out, &format!("{n}_RC")),
            Some("0"),
            "{what} pushes are refused by default: {out}"
        );
        let lines: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with(&format!("{n} ")))
            .collect();
        assert!(
            lines.join("\n").contains("ref policy"),
            "{what}: {}",
            lines.join("\n")
        );
    }
    let clean = value_of(&out, "CLEAN").unwrap_or_default().to_string();
    assert!(!clean.is_empty());
    assert_eq!(
        value_of(&out, "UPSTREAM_MAIN"),
        Some(clean.as_str()),
        "upstream has the clean commit and not the leak: {out}"
    );
    let view = out
        .split("AGENT_VIEW_START")
        .nth(1)
        .and_then(|s| s.split("AGENT_VIEW_END").next())
        .unwrap_or_default();
    assert!(view.contains("insteadOf"), "the gate's rewrites: {view}");
    assert!(
        !view.contains(&h.secret),
        "the credential is in neither the agent's env nor its git config"
    );
    assert!(!out.contains(&h.secret), "nor anywhere in the output");
    assert!(
        logs.lines()
            .filter(|l| l.contains("git_auth"))
            .all(|l| !l.contains("\"ok\":false")),
        "every upstream request carried the token: {logs}"
    );

    assert_ne!(value_of(&out, "LS_RC"), Some("0"), "fail closed: {out}");
    let ls: Vec<&str> = out.lines().filter(|l| l.starts_with("LS ")).collect();
    let ls = ls.join("\n");
    assert!(
        ls.contains("stale") && !ls.contains("refs/heads/main"),
        "the gate says why and serves no refs: {ls}"
    );
    assert!(t.elapsed() < Duration::from_secs(120));
    let git = &r.result["audit"]["git"];
    assert_eq!(git["pushes_accepted"], 1, "{}", r.result);
    assert_eq!(git["pushes_rejected"], 10, "{}", r.result);
    assert!(git["fetches"].as_u64().unwrap_or(0) >= 2, "{}", r.result);
    assert_eq!(git["fetches_failed"], 1, "{}", r.result);
}

/// A finding of a review-marked rule holds the push with a ticket; `bottle list` shows it,
/// `bottle approve` on the host (never reachable from the agent) lets the next push through,
/// and the approval is an audit record.
#[test]
fn git_gate_review_ticket_is_approved_from_the_host_and_the_push_lands() {
    require_engine!();
    let h = home("gitgate-approve");
    let up = Provider::start_with(UPSTREAM, &[format!("UPSTREAM_GIT_TOKEN={}", h.secret)]);
    gated_home(&h, &up, "");
    let script = format!(
        r#"cd /tmp && git clone -q https://{UPSTREAM}/git/repo.git r && cd r
git config user.name agent && git config user.email agent@bottle.invalid
echo "API_TOKEN=Zx8kP2mQ9vL4nR7tY3wB6cD1" > app.env && git add app.env && git commit -qm conf
git push origin HEAD:main > /tmp/p1 2>&1; echo PUSH1_RC=$?; sed 's/^/PUSH1 /' /tmp/p1
grep -o 'ticket [0-9a-f]*' /tmp/p1 | head -1 | cut -d' ' -f2 > /workspace/ticket.tmp
mv /workspace/ticket.tmp /workspace/ticket
while [ ! -e /workspace/approved ]; do sleep 0.2; done
git push origin HEAD:main > /tmp/p2 2>&1; echo PUSH2_RC=$?; sed 's/^/PUSH2 /' /tmp/p2
echo HEAD=$(git rev-parse HEAD)
echo UPSTREAM_MAIN=$(git ls-remote origin refs/heads/main | cut -f1)
"#
    );
    let child = spawn_gated(&h, &up, &script);
    let have = wait_for_file(&h.workspace.join("ticket"), Duration::from_secs(180));
    let ticket = std::fs::read_to_string(h.workspace.join("ticket"))
        .unwrap_or_default()
        .trim()
        .to_string();
    let list = bottle_cmd(&h).args(["list", "--json"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap_or_default();
    let row = rows
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["bottle"] == "gated" && r["pending_tickets"].is_array())
        .cloned()
        .unwrap_or_default();
    // While it runs: the token is in no container's inspect output (env, args, labels,
    // mounts) and no engine event; the git sidecar got it over stdin only.
    let bid = row["id"].as_str().unwrap_or_default().to_string();
    for role in ["agent", "sidecar"] {
        let c = format!("bottle-{bid}-{role}");
        let inspect = docker_ok(&["inspect", &c]);
        assert!(inspect.len() > 100, "inspect of {c}");
        assert!(
            !inspect.contains(&h.secret),
            "the token is in `docker inspect {c}`"
        );
    }
    let events = docker_ok(&[
        "events",
        "--since",
        "10m",
        "--until",
        "0s",
        "--filter",
        &format!("label=io.bottle.id={bid}"),
    ]);
    assert!(!events.is_empty(), "the bottle's engine events");
    assert!(
        !events.contains(&h.secret),
        "the token is in `docker events`"
    );
    // The launcher announces the held push as approval.pending (polled every 2 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let pending = loop {
        let o = bottle_cmd(&h)
            .args(["events", "--id", &bid])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        if text.contains("approval.pending") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let line = pending
        .lines()
        .find(|l| l.contains("approval.pending"))
        .unwrap_or_else(|| panic!("no approval.pending event: {pending}"));
    assert!(
        line.contains(&ticket) && !line.contains(&h.secret),
        "{line}"
    );
    let approve = bottle_cmd(&h)
        .args([
            "approve",
            &ticket,
            "--reason",
            "a test fixture, not a secret",
        ])
        .output()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let id = row["id"].as_str().unwrap_or_default().to_string();
    let audit = bottle_cmd(&h)
        .args(["logs", "--audit", &id])
        .output()
        .unwrap();
    std::fs::write(h.workspace.join("approved"), "").unwrap();
    let r = finish(child);
    let out = r.stderr.clone();
    assert!(have && ticket.len() == 12, "a ticket: {ticket:?}\n{out}");
    assert_ne!(value_of(&out, "PUSH1_RC"), Some("0"), "held: {out}");
    assert!(out.contains("held for review"), "{out}");
    assert_eq!(
        row["pending_tickets"][0]["id"],
        ticket.as_str(),
        "bottle list shows the ticket: {rows}"
    );
    assert_eq!(row["pending_tickets"][0]["rule"], "generic-env-secret");
    assert!(
        approve.status.success(),
        "bottle approve: {}",
        String::from_utf8_lossy(&approve.stderr)
    );
    assert_eq!(value_of(&out, "PUSH2_RC"), Some("0"), "approved: {out}");
    assert_eq!(
        value_of(&out, "UPSTREAM_MAIN"),
        value_of(&out, "HEAD"),
        "{out}"
    );
    let audit = String::from_utf8_lossy(&audit.stdout).to_string();
    assert!(
        audit.contains("\"op\":\"ticket\"") && audit.contains("a test fixture, not a secret"),
        "the approval is an audit record: {audit}"
    );
    // Unknown tickets and empty reasons are clear errors.
    let o = bottle_cmd(&h)
        .args(["approve", &ticket, "--reason", " "])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("--reason must say why"));
    let o = bottle_cmd(&h)
        .args(["approve", "0123456789ab", "--reason", "x"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(e.contains("no running bottle"), "{e}");
}

/// An sshd + git-shell upstream on a network of the test's own, answering as `git.ssh.test`:
/// it makes its host key and a client key at start and prints both (test only).
struct SshUpstream {
    net: String,
    container: String,
    ip: String,
    host_key: String,
    client_key: String,
}

impl Drop for SshUpstream {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.container]);
        let _ = docker(&["network", "rm", &self.net]);
    }
}

const SSH_HOST: &str = "git.ssh.test";

const SSHD_SCRIPT: &str = r#"set -e
mkdir -p /run/sshd /srv && rm -f /etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
useradd -m -s /usr/bin/git-shell git && usermod -p '*' git
ssh-keygen -q -t ed25519 -N '' -f /tmp/client -C bottle-e2e
mkdir -p /home/git/.ssh && cp /tmp/client.pub /home/git/.ssh/authorized_keys
chmod 700 /home/git/.ssh && chmod 600 /home/git/.ssh/authorized_keys && chown -R git:git /home/git/.ssh
git init -q --bare -b main /srv/repo.git
git clone -q /srv/repo.git /tmp/seed 2>/dev/null && cd /tmp/seed && echo 'hello over ssh' > README
git -c user.name=seed -c user.email=seed@test add README && git -c user.name=seed -c user.email=seed@test commit -qm initial
git push -q origin HEAD:main && chown -R git:git /srv/repo.git
echo "HOSTKEY $(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)"
echo CLIENTKEY_BEGIN; cat /tmp/client; echo CLIENTKEY_END
exec /usr/sbin/sshd -D -e -o PasswordAuthentication=no -o HostKey=/etc/ssh/ssh_host_ed25519_key
"#;

impl SshUpstream {
    fn start() -> SshUpstream {
        static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let image = IMAGE.get_or_init(|| {
            let o = std::process::Command::new(bottle_bin())
                .args(["images", "build", "test-sshd"])
                .stderr(std::process::Stdio::inherit())
                .output()
                .unwrap();
            assert!(o.status.success(), "bottle images build test-sshd failed");
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.starts_with("bottle/test-sshd:"))
                .expect("the test-sshd tag")
                .trim()
                .to_string()
        });
        let id = rand_hex(8);
        let label = format!("io.bottle.e2e={}", std::process::id());
        let net = format!("bottle-e2e-ssh-{id}");
        create_test_network(&net, &label, 216);
        let container = format!("bottle-e2e-ssh-{id}");
        docker_ok(&[
            "run",
            "-d",
            "--name",
            &container,
            "--label",
            &label,
            "--network",
            &net,
            "--network-alias",
            SSH_HOST,
            image,
            "sh",
            "-c",
            SSHD_SCRIPT,
        ]);
        let deadline = Instant::now() + Duration::from_secs(60);
        let logs = loop {
            let o = docker(&["logs", &container]);
            let logs = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            if logs.contains("CLIENTKEY_END") && logs.contains("Server listening") {
                break logs;
            }
            assert!(Instant::now() < deadline, "sshd did not start: {logs}");
            std::thread::sleep(Duration::from_millis(200));
        };
        let host_key = logs
            .lines()
            .find_map(|l| l.strip_prefix("HOSTKEY "))
            .unwrap()
            .trim()
            .to_string();
        let client_key = logs
            .split("CLIENTKEY_BEGIN\n")
            .nth(1)
            .and_then(|s| s.split("CLIENTKEY_END").next())
            .unwrap()
            .to_string();
        let ip = docker_ok(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &container,
        ]);
        SshUpstream {
            net,
            container,
            ip,
            host_key,
            client_key,
        }
    }
}

/// A bottle `sshgated` whose remote `origin` is the ssh upstream, pinned to `host_key`.
fn ssh_home(h: &Home, up: &SshUpstream, host_key: &str) {
    let key_file = h.home.join("client.key");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let _ = std::fs::remove_file(&key_file);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_file)
            .unwrap();
        f.write_all(up.client_key.as_bytes()).unwrap();
    }
    let toml = format!(
        r#"description = "e2e git gate over ssh"
image = "shell"
workspace = "bind"

[resources]
cpus = 1
memory = "512m"
pids = 256

[secrets]
GIT_SSH_KEY = {{ file = {key:?} }}

[[git.remote]]
name = "origin"
url = "git@{SSH_HOST}:srv/repo.git"
ssh_key = "GIT_SSH_KEY"
host_key = "{host_key}"
allow_private = ["{ip}/32"]
"#,
        key = key_file.display().to_string(),
        ip = up.ip,
    );
    std::fs::write(h.home.join("bottles/sshgated.toml"), toml).unwrap();
}

/// Over ssh: clone with the scp-style URL, a clean push lands, a key push is rejected, the
/// private key is nowhere in the agent; a wrong pinned host key fails closed.
#[test]
fn git_gate_over_ssh_with_a_pinned_host_key() {
    require_engine!();
    let h = home("gitgate-ssh");
    let up = SshUpstream::start();
    ssh_home(&h, &up, &up.host_key);
    let script = format!(
        r#"cd /tmp && git clone -q git@{SSH_HOST}:srv/repo.git r 2>&1; echo CLONE_RC=$?
cd r && echo README=$(cat README)
git config user.name agent && git config user.email agent@bottle.invalid
echo clean > clean.txt && git add clean.txt && git commit -qm 'clean over ssh'
git push origin HEAD:main > /tmp/p1 2>&1; echo PUSH1_RC=$?; sed 's/^/PUSH1 /' /tmp/p1
k=AKIA; echo "aws_access_key_id = ${{k}}Z7QK4M2XW5RTY3PV" > leak.txt && git add leak.txt && git commit -qm leak
git push origin HEAD:main > /tmp/p2 2>&1; echo PUSH2_RC=$?; sed 's/^/PUSH2 /' /tmp/p2
echo AGENT_VIEW_START; env; cat /etc/gitconfig; ls -la ~ /tmp; echo AGENT_VIEW_END
"#
    );
    let o = bottle_cmd(&h)
        .env("BOTTLE_EGRESS_NETWORK", &up.net)
        .env_remove("BOTTLE_SIDECAR_IMAGE")
        .args(["run", "--json", "sshgated", "--", "bash", "-c", &script])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stderr).to_string();
    let sshd_logs = docker_ok(&["logs", &up.container]);
    assert_eq!(
        value_of(&out, "CLONE_RC"),
        Some("0"),
        "{out}\nsshd: {sshd_logs}"
    );
    assert_eq!(value_of(&out, "README"), Some("hello over ssh"), "{out}");
    assert_eq!(value_of(&out, "PUSH1_RC"), Some("0"), "{out}");
    assert_ne!(value_of(&out, "PUSH2_RC"), Some("0"), "{out}");
    assert!(out.contains("aws-access-key-id"), "{out}");
    let head = docker_ok(&[
        "exec",
        &up.container,
        "git",
        "--git-dir=/srv/repo.git",
        "log",
        "-1",
        "--format=%s",
        "main",
    ]);
    assert_eq!(head, "clean over ssh", "upstream has the clean push only");
    let key_body: String = up
        .client_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(key_body.len() > 40);
    for line in up.client_key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(
            !out.contains(line),
            "a line of the private key reached the agent's output"
        );
    }
    // The wrong host key (another server's): refused, nothing served.
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd2B9LqkN4cFQ7PqJ0yQ8v3m1ZsXo5bTt2aR6uW9eKc";
    ssh_home(&h, &up, other);
    let o = bottle_cmd(&h)
        .env("BOTTLE_EGRESS_NETWORK", &up.net)
        .env_remove("BOTTLE_SIDECAR_IMAGE")
        .args([
            "run",
            "--json",
            "sshgated",
            "--",
            "bash",
            "-c",
            &format!("git ls-remote git@{SSH_HOST}:srv/repo.git 2>&1; echo LS_RC=$?"),
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stderr).to_string();
    assert_ne!(value_of(&out, "LS_RC"), Some("0"), "{out}");
    assert!(
        out.contains("stale") && !out.contains("refs/heads/main"),
        "fail closed: {out}"
    );
}
