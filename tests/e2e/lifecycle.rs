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
            "echo $BOTTLE_ID > /workspace/id; i=0; while true; do i=$((i+1)); echo $i > /workspace/counter; printf 'tick \\033[1m%d\\033[0m\\n' $i; sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
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
    // capture: the last lines, then only what came after the cursor.
    let cap = |args: &[&str]| -> serde_json::Value {
        let mut a = vec!["capture", id.as_str(), "--json"];
        a.extend_from_slice(args);
        let o = bottle_cmd(&h).args(&a).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let tick = |l: &serde_json::Value| -> u64 {
        l.as_str()
            .and_then(|s| s.strip_prefix("tick "))
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let first = cap(&["--lines", "5", "--plain"]);
    let lines = first["lines"].as_array().unwrap().clone();
    assert_eq!(lines.len(), 5, "{first}");
    assert!(
        lines.iter().all(|l| tick(l) > 0),
        "plain text without escapes: {first}"
    );
    let escaped = cap(&["--lines", "1"]);
    assert!(
        escaped["lines"][0]
            .as_str()
            .unwrap_or("")
            .contains("\\x1b[1m"),
        "escaped by default: {escaped}"
    );
    std::thread::sleep(Duration::from_millis(600));
    let cursor = first["cursor"].as_str().unwrap().to_string();
    let next = cap(&["--since", &cursor, "--plain"]);
    let newer = next["lines"].as_array().unwrap().clone();
    let last_seen = tick(lines.last().unwrap());
    assert!(!newer.is_empty(), "new output after the cursor: {next}");
    assert!(
        newer.iter().all(|l| tick(l) > last_seen),
        "only output after the cursor ({last_seen}): {next}"
    );
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
    let ev = events_of(&h, &id);
    for want in [
        "session.started",
        "session.paused",
        "session.resumed",
        "session.killed",
    ] {
        assert!(ev.iter().any(|e| e == want), "{want} in {ev:?}");
    }
}

/// The event names recorded for bottle `id` (`bottle events --id`).
fn events_of(h: &Home, id: &str) -> Vec<String> {
    let o = bottle_cmd(h).args(["events", "--id", id]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .inspect(|v| assert_eq!(v["backend"], "docker"))
        .filter_map(|v| v["event"].as_str().map(str::to_string))
        .collect()
}

/// `bottle send-keys` types into a `bottle start` bottle's shell: an echo round trip through
/// `bottle capture`, `C-c` interrupts a `sleep`, concurrent calls never interleave, and
/// typing `exit` ends the bottle with every object removed.
#[test]
fn send_keys_reaches_the_shell_control_keys_work_and_writes_do_not_interleave() {
    require_engine!();
    let h = home("sendkeys");
    let imgs = images();
    let w = world();
    let cmd = format!(
        "cd {ws} && env BOTTLE_HOME={home} BOTTLE_EGRESS_NETWORK={net} BOTTLE_E2E_TOKEN={secret} \
         BOTTLE_SIDECAR_IMAGE={sidecar} BOTTLE_AGENT_IMAGE={agent} {bin} start e2e -- \
         bash -c 'echo $BOTTLE_ID > /workspace/id; exec bash --norc'",
        ws = h.workspace.display(),
        home = h.home.display(),
        net = w.net,
        secret = h.secret,
        sidecar = imgs.sidecar,
        agent = imgs.agent,
        bin = bottle_bin(),
    );
    let t = crate::agents::Tmux::start(&cmd);
    assert!(
        wait_for_file(&h.workspace.join("id"), Duration::from_secs(60)),
        "the shell did not start: {}",
        t.screen()
    );
    let id = std::fs::read_to_string(h.workspace.join("id"))
        .unwrap()
        .trim()
        .to_string();
    let send = |args: &[&str]| {
        let mut a = vec!["send-keys", id.as_str()];
        a.extend_from_slice(args);
        let o = bottle_cmd(&h).args(&a).output().unwrap();
        assert!(
            o.status.success(),
            "send-keys: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let captured = |needle: &str| -> (bool, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let o = bottle_cmd(&h)
                .args(["capture", &id, "--plain", "--lines", "200"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            if text.contains(needle) || Instant::now() > deadline {
                return (text.contains(needle), text);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    std::thread::sleep(Duration::from_millis(500));
    send(&["echo", "hi-$((6*7))", "--enter"]);
    let (ok, text) = captured("hi-42");
    assert!(ok, "the echo round trip: {text}");
    send(&["sleep 30", "--enter"]);
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    send(&["--keys", "C-c"]);
    send(&["echo after-$((1+1))", "--enter"]);
    let (ok, text) = captured("after-2");
    assert!(
        ok && started.elapsed() < Duration::from_secs(10),
        "C-c interrupted the sleep: {text}"
    );
    // Concurrent writers: every line arrives whole.
    let lines: Vec<String> = (0..6).map(|i| format!("Z{i}").repeat(40)).collect();
    std::thread::scope(|s| {
        for l in &lines {
            let l = format!("echo {l}");
            s.spawn(move || send(&[&l, "--enter"]));
        }
    });
    for l in &lines {
        let (ok, text) = captured(l);
        assert!(ok, "a whole line {l}: {text}");
    }
    let o = bottle_cmd(&h)
        .args(["send-keys", &id, "--keys", "Hyper"])
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("unknown key"));
    send(&["exit 0", "--enter"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while t.exit_status().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(t.exit_status(), Some(0), "{}", t.screen());
    let (c, n) = wait_gone(&id, Duration::from_secs(30));
    assert!(c.is_empty() && n.is_empty(), "exit left {c:?} {n:?}");
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// `bottle spawn` returns once the bottle is ready and leaves it running under a supervisor:
/// the orchestrator's tags are on every container, `bottle list` shows it live, send-keys and
/// capture drive it, and `bottle end` removes every object and ends the supervisor.
#[test]
fn spawned_bottles_run_detached_and_end_removes_everything() {
    require_engine!();
    let h = home("spawn");
    let s = spawn_shell(
        &h,
        &["--tag", "gemba.session=42", "--tag", "gemba.agent=coder"],
    );
    let id = s["id"].as_str().unwrap().to_string();
    let _kill = KillOnDrop(id.clone());
    let pid = s["supervisor_pid"].as_i64().unwrap() as i32;
    assert!(pid_alive(pid), "the supervisor runs");
    for c in [&s["agent_container"], &s["sidecar_container"]] {
        let c = c.as_str().unwrap();
        let l = docker_ok(&[
            "inspect",
            "-f",
            "{{index .Config.Labels \"gemba.session\"}} {{index .Config.Labels \"gemba.agent\"}}",
            c,
        ]);
        assert_eq!(l, "42 coder", "{c} carries the orchestrator's tags");
    }
    let list = bottle_cmd(&h).args(["list", "--json"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .cloned()
        .expect("listed");
    assert_eq!(row["mode"], "spawn");
    assert_eq!(row["live"], true);
    assert_eq!(row["state"], "running");
    let o = bottle_cmd(&h)
        .args(["send-keys", &id, "echo spawned-$((2*21))", "--enter"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let o = bottle_cmd(&h)
            .args(["capture", &id, "--plain"])
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&o.stdout).to_string();
        if t.contains("spawned-42") || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains("spawned-42"), "send-keys → capture: {text}");
    let o = bottle_cmd(&h).args(["end", &id]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // What went is counted, though the supervisor (not `end` itself) removed it.
    assert!(
        err.contains("ended (2 containers, 1 network removed)"),
        "{err}"
    );
    let (c, n) = wait_gone(&id, Duration::from_secs(30));
    assert!(c.is_empty() && n.is_empty(), "end left {c:?} {n:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!pid_alive(pid), "the supervisor ended");
    let ev = events_of(&h, &id);
    assert_eq!(
        ev.first().map(String::as_str),
        Some("session.started"),
        "{ev:?}"
    );
    assert!(ev.iter().any(|e| e == "session.ended"), "{ev:?}");
}

/// A supervisor killed with SIGKILL closes the sidecar's lifeline: the proxy stops (the
/// agent has no way out), and the next reap leaves no labelled object.
#[test]
fn a_killed_supervisor_fails_closed_and_the_reap_cleans_up() {
    require_engine!();
    let h = home("spawn-kill");
    let s = spawn_shell(&h, &[]);
    let id = s["id"].as_str().unwrap().to_string();
    let _kill = KillOnDrop(id.clone());
    let pid = s["supervisor_pid"].as_i64().unwrap() as i32;
    // SAFETY: the pid of the supervisor this test spawned.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let sidecar = s["sidecar_container"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    let state = loop {
        let st = docker_ok(&["inspect", "-f", "{{.State.Status}}", &sidecar]);
        if st != "running" || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(
        state, "running",
        "the sidecar stops when its lifeline closes"
    );
    // Its containers removed behind bottle's back: `bottle list` reports the session gone.
    docker_ok(&["rm", "-f", s["agent_container"].as_str().unwrap(), &sidecar]);
    let list = bottle_cmd(&h).args(["list", "--json"]).output().unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["state"], "gone", "reported, not crashed on: {rows}");
    let o = bottle_cmd(&h).args(["reap"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (c, n) = wait_gone(&id, Duration::from_secs(30));
    assert!(c.is_empty() && n.is_empty(), "reap left {c:?} {n:?}");
    let ev = events_of(&h, &id);
    assert!(ev.iter().any(|e| e == "session.gone"), "{ev:?}");
    assert!(ev.iter().any(|e| e == "session.reaped"), "{ev:?}");
}

/// Eight spawned bottles at once: each listed with its label, driven through send-keys and
/// capture, and ended, all in parallel.
#[test]
fn eight_spawned_bottles_are_listed_captured_and_ended_in_parallel() {
    require_engine!();
    let h = home("spawn8");
    let ids: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let h = &h;
                s.spawn(move || {
                    let label = format!("worker-{i}");
                    let r = spawn_shell(h, &["--label", &label, "--color", "green"]);
                    r["id"].as_str().unwrap().to_string()
                })
            })
            .collect();
        hs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let list = bottle_cmd(&h).args(["list", "--json"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} listed: {rows}"));
        assert_eq!(row["backend"], "docker");
        assert_eq!(row["color"], "green");
        assert!(row["routes"].as_u64().is_some(), "{row}");
        assert!(
            row["label"].as_str().unwrap_or("").starts_with("worker-"),
            "{row} ({i})"
        );
    }
    std::thread::scope(|s| {
        for (i, id) in ids.iter().enumerate() {
            let h = &h;
            s.spawn(move || {
                let o = bottle_cmd(h)
                    .args(["send-keys", id, &format!("echo n{i}-$((1+1))"), "--enter"])
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                let want = format!("n{i}-2");
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let o = bottle_cmd(h)
                        .args(["capture", id, "--plain"])
                        .output()
                        .unwrap();
                    if String::from_utf8_lossy(&o.stdout).contains(&want) {
                        break;
                    }
                    assert!(Instant::now() < deadline, "{id}: no {want}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                let o = bottle_cmd(h).args(["end", id]).output().unwrap();
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            });
        }
    });
    for id in &ids {
        let (c, n) = wait_gone(id, Duration::from_secs(30));
        assert!(c.is_empty() && n.is_empty(), "{id} left {c:?} {n:?}");
    }
}

/// A teardown that cannot remove everything (a foreign container holds the bottle's network)
/// leaves a marker; once the blocker is gone the next `bottle reap` completes it, even though
/// no launcher is stale, and names the bottle with its image, age and reason.
#[test]
fn a_failed_teardown_leaves_a_marker_the_next_reap_completes() {
    require_engine!();
    let h = home("teardown-marker");
    let s = spawn_shell(&h, &[]);
    let id = s["id"].as_str().unwrap().to_string();
    let _kill = KillOnDrop(id.clone());
    let nets = docker_ok(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label=io.bottle.id={id}"),
    ]);
    let net = nets.lines().next().expect("a bottle network").to_string();
    let blocker = format!("bottle-e2e-blocker-{}", rand_hex(6));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &blocker,
        "--network",
        &net,
        &images().agent,
        "sleep",
        "300",
    ]);
    let o = bottle_cmd(&h).args(["end", &id]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(|x| std::path::PathBuf::from(x).join("bottle"))
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".local/state/bottle")
        });
    let marker = state.join("teardown-failed").join(&id);
    assert!(
        wait_for_file(&marker, Duration::from_secs(30)),
        "no marker at {} after end: {err}",
        marker.display()
    );
    let (_, n) = objects_of(&id);
    assert!(!n.is_empty(), "the held network is still there");
    docker_ok(&["rm", "-f", &blocker]);
    let o = bottle_cmd(&h).args(["reap", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let d = r["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("the reap names {id}: {r}"));
    assert_eq!(d["reason"], "teardown_failed", "{d}");
    let (c, n) = objects_of(&id);
    assert!(c.is_empty() && n.is_empty(), "reap left {c:?} {n:?}");
    assert!(
        !marker.exists(),
        "the marker is removed once the teardown is complete"
    );
}

/// A supervisor killed while its bottle is still being created leaves objects that the next
/// reap removes, logged with the bottle's id.
#[test]
fn a_launcher_killed_mid_spawn_leaves_state_the_next_reap_cleans() {
    require_engine!();
    let h = home("spawn-midway");
    let mut child = bottle_cmd(&h)
        .args(["spawn", "e2e", "--json", "--", "bash", "--norc"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first labelled object of a bottle of this home's workspace carries the supervisor pid.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (id, pid) = loop {
        let out = docker_ok(&[
            "ps",
            "-a",
            "--filter",
            "label=io.bottle.agent=e2e",
            "--format",
            "{{.Label \"io.bottle.id\"}} {{.Label \"io.bottle.launcher-pid\"}}",
        ]);
        let mine = out.lines().find_map(|l| {
            let mut p = l.split_whitespace();
            let (id, pid) = (p.next()?, p.next()?.parse::<i32>().ok()?);
            // This spawn's supervisor is a child of `bottle spawn` (our child).
            let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid: u32 = ppid
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == child.id()).then(|| (id.to_string(), pid))
        });
        if let Some(m) = mine {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "no container of this spawn appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: the supervisor pid this test's spawn started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let _ = child.wait();
    let o = bottle_cmd(&h).args(["reap", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (c, n) = wait_gone(&id, Duration::from_secs(30));
    if !(c.is_empty() && n.is_empty()) {
        // A create that was in flight when the supervisor died may land after the first reap.
        let o = bottle_cmd(&h).args(["reap"]).output().unwrap();
        assert!(o.status.success());
    }
    let (c, n) = wait_gone(&id, Duration::from_secs(30));
    assert!(c.is_empty() && n.is_empty(), "reap left {c:?} {n:?}");
}
