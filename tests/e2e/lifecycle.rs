//! `bottle pause` / `resume` / `exec` / `kill` on a running bottle.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::require_engine;

fn counter(h: &Home) -> u64 {
    std::fs::read_to_string(h.workspace.join("counter"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Pause freezes a counter loop (no progress over an interval) while the proxy sidecar keeps
/// running, resume continues it, exec returns the command's exit code, kill removes a paused
/// bottle at once and its launcher ends.
#[test]
fn pause_freezes_resume_continues_exec_returns_the_code_and_kill_removes_a_paused_bottle() {
    require_engine!();
    let h = home("lifecycle");
    let child = bottle_cmd(&h)
        .args([
            "run",
            "e2e",
            "--",
            "bash",
            "-c",
            "echo $BOTTLE_ID > /workspace/id; i=0; while true; do i=$((i+1)); echo $i > /workspace/counter; sleep 0.05; done",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for_file(
        &h.workspace.join("id"),
        Duration::from_secs(60)
    ));
    let id = std::fs::read_to_string(h.workspace.join("id"))
        .unwrap()
        .trim()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&h) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = bottle_cmd(&h)
        .args(["pause", &id, "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["verb"], "pause");
    std::thread::sleep(Duration::from_millis(300));
    let frozen = counter(&h);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(counter(&h), frozen, "no progress while paused");
    let sidecar_state = docker_ok(&[
        "ps",
        "--filter",
        &format!("label=io.bottle.id={id}"),
        "--filter",
        "label=io.bottle.role=sidecar",
        "--format",
        "{{.State}}",
    ]);
    assert_eq!(sidecar_state, "running", "the proxy sidecar keeps running");
    let list = bottle_cmd(&h).args(["list", "--json"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(row["state"], "paused", "{row}");
    let o = bottle_cmd(&h)
        .args(["exec", &id, "--", "true"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "exec into a paused agent is refused");
    assert!(String::from_utf8_lossy(&o.stderr).contains("bottle resume"));
    let o = bottle_cmd(&h).args(["resume", &id]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::thread::sleep(Duration::from_secs(1));
    assert!(counter(&h) > frozen, "resume continues the loop");
    let o = bottle_cmd(&h)
        .args(["exec", &id, "--", "sh", "-c", "echo in-$(id -u); exit 7"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(7),
        "exec returns the command's exit code"
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("in-"),
        "exec output"
    );
    let o = bottle_cmd(&h).args(["pause", &id]).output().unwrap();
    assert!(o.status.success());
    let t = Instant::now();
    let o = bottle_cmd(&h)
        .args(["kill", &id, "--json"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "kill a paused bottle: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (c, n) = wait_gone(&id, Duration::from_secs(20));
    assert!(c.is_empty() && n.is_empty(), "kill left {c:?} {n:?}");
    assert!(t.elapsed() < Duration::from_secs(20));
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0), "the launcher ends too");
    let o = bottle_cmd(&h).args(["kill", &id]).output().unwrap();
    assert!(!o.status.success(), "killing an unknown bottle is an error");
}
