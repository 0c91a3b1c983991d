//! `bottle spawn --gemba agents.toml <agent>`: gemba's agent stanzas as bottles.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::require_engine;

/// Writes an agents.toml next to the home (outside the workspace) and returns its path.
fn agents_toml(h: &Home, text: &str) -> std::path::PathBuf {
    let p = h.home.parent().unwrap().join("agents.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn capture_until(h: &Home, id: &str, needle: &str) -> (bool, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = bottle_cmd(h)
            .args(["capture", id, "--plain", "--lines", "200"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        if text.contains(needle) || Instant::now() > deadline {
            return (text.contains(needle), text);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn exec(h: &Home, id: &str, script: &str) -> (i32, String) {
    let o = bottle_cmd(h)
        .args(["exec", id, "--", "sh", "-c", script])
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
    )
}

/// A gemba agent runs in its bottle with gemba's layout: the workspace read-only at `cwd`, a
/// per-session tmpfs from `{{session_id}}`, its bottle's routes (`bridge:e2e`) with the
/// secret injected by the proxy (the agent holds only the placeholder), `gemba.agent` and the
/// orchestrator's `gemba.session` on every container, and the prompt typed as its first message.
#[test]
fn a_gemba_agent_spawns_with_its_layout_routes_and_first_message() {
    require_engine!();
    let h = home("gemba");
    std::fs::write(h.workspace.join("README"), "hello").unwrap();
    let f = agents_toml(
        &h,
        r#"
[[agent]]
name = "coder"
binary = "bash"
args = ["--norc"]
preamble = "first_message"
hooks = "none"

[agent.container]
image = "shell"
cwd = "/work"
memory = "768m"
pids_limit = 0
mounts = [ { src = "{{workspace}}", dst = "/work", mode = "ro" },
           { dst = "/scratch/{{session_id}}", mode = "tmpfs", size = "16m" } ]
secrets = ["e2e_token"]
network = "bridge:e2e"
"#,
    );
    let o = bottle_cmd(&h)
        .args([
            "spawn",
            "--gemba",
            f.to_str().unwrap(),
            "coder",
            "--tag",
            "gemba.session=s-7",
            "--prompt",
            "echo first-$((40+2))",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = s["id"].as_str().unwrap().to_string();
    let _kill = KillOnDrop(id.clone());
    for c in [&s["agent_container"], &s["sidecar_container"]] {
        let l = docker_ok(&[
            "inspect",
            "-f",
            "{{index .Config.Labels \"gemba.agent\"}} {{index .Config.Labels \"gemba.session\"}}",
            c.as_str().unwrap(),
        ]);
        assert_eq!(l, "coder s-7");
    }
    let (ok, text) = capture_until(&h, &id, "first-42");
    assert!(ok, "the prompt is typed as the first message: {text}");
    let (code, out) = exec(
        &h,
        &id,
        &format!(
            "pwd; cat README; touch /work/x 2>/dev/null && echo WROTE; touch /scratch/{id}/y && echo SCRATCH; \
             echo E2E_TOKEN=$E2E_TOKEN; curl -s https://upstream.test/echo -o /dev/null -w 'route=%{{http_code}}\\n'; curl -s https://elsewhere.test/ -o /dev/null -w 'other=%{{http_code}}\\n'; true"
        ),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("/work\nhello"), "cwd and workspace: {out}");
    assert!(!out.contains("WROTE"), "the workspace is read-only: {out}");
    assert!(out.contains("SCRATCH"), "the session tmpfs: {out}");
    assert!(!out.contains(&h.secret), "the secret is not in the agent");
    assert!(
        out.contains("E2E_TOKEN=bottle-placeholder-E2E_TOKEN"),
        "a placeholder: {out}"
    );
    assert!(out.contains("route=200"), "the bottle's route works: {out}");
    assert!(!out.contains("other=200"), "nothing else: {out}");
    let agent = s["agent_container"].as_str().unwrap();
    assert!(!docker_ok(&["inspect", agent]).contains(&h.secret));
    assert_eq!(
        docker_ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} {{.Config.WorkingDir}}",
            agent
        ]),
        "805306368 512 /work",
        "limits and cwd from the stanza"
    );
    let o = bottle_cmd(&h).args(["end", &id]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (c, n) = wait_gone(&id, Duration::from_secs(30));
    assert!(c.is_empty() && n.is_empty(), "end left {c:?} {n:?}");
}

/// The claude_md preamble writes CLAUDE.md for the session (after the project's own) and puts
/// the file back when the bottle ends.
#[test]
fn the_claude_md_preamble_is_written_and_restored() {
    require_engine!();
    let h = home("gemba-md");
    std::fs::write(h.workspace.join("CLAUDE.md"), "# house rules\n").unwrap();
    let f = agents_toml(
        &h,
        r#"
[[agent]]
name = "md"
binary = "bash"
args = ["--norc"]
preamble = "claude_md"

[agent.container]
image = "shell"
mounts = [ { src = "{{workspace}}", dst = "/work", mode = "rw" } ]
network = "none"
"#,
    );
    let o = bottle_cmd(&h)
        .args([
            "spawn",
            "--gemba",
            f.to_str().unwrap(),
            "md",
            "--prompt",
            "Session task: T-99",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = s["id"].as_str().unwrap().to_string();
    let _kill = KillOnDrop(id.clone());
    let (code, out) = exec(&h, &id, "cat /work/CLAUDE.md");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("# house rules\n") && out.contains("Session task: T-99"),
        "{out}"
    );
    let o = bottle_cmd(&h).args(["end", &id]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    let restored = loop {
        let t = std::fs::read_to_string(h.workspace.join("CLAUDE.md")).unwrap();
        if t == "# house rules\n" || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(restored, "# house rules\n");
}

/// Each gemba validation refuses before anything is created, with its documented message.
#[test]
fn gemba_validations_refuse_before_anything_runs() {
    require_engine!();
    let h = home("gemba-bad");
    let base =
        "[[agent]]\nname = \"a\"\nbinary = \"bash\"\n\n[agent.container]\nimage = \"shell\"\n";
    for (extra, want) in [
        ("network = \"host\"\n", "`host` requires unsafe = true"),
        ("privileged = true\n", "privileged containers are refused"),
        (
            "cap_add = [\"SYS_ADMIN\"]\n",
            "added capabilities (SYS_ADMIN) are refused",
        ),
        (
            "secrets = [\"nope\"]\nnetwork = \"bridge:e2e\"\n",
            "unknown secret `nope`",
        ),
        (
            "mounts = [ { dst = \"/a\", mode = \"tmpfs\" }, { dst = \"/a\", mode = \"tmpfs\" } ]\n",
            "two mounts have the destination `/a`",
        ),
    ] {
        let f = agents_toml(&h, &format!("{base}{extra}"));
        let before = docker_ok(&["ps", "-aq", "--filter", "label=io.bottle.agent=a"]);
        let o = bottle_cmd(&h)
            .args(["spawn", "--gemba", f.to_str().unwrap(), "a"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(want),
            "want {want:?}: {err}"
        );
        assert!(
            err.contains("agents.toml:"),
            "names the file and line: {err}"
        );
        let after = docker_ok(&["ps", "-aq", "--filter", "label=io.bottle.agent=a"]);
        assert_eq!(before, after, "nothing was created");
    }
    let f = agents_toml(&h, &base.replace("image = \"shell\"\n", ""));
    let o = bottle_cmd(&h)
        .args(["spawn", "--gemba", f.to_str().unwrap(), "a"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("an image is required"));
}
