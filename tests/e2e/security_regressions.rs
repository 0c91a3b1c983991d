//! Security regressions that need real bottles (the Docker-free ones are in
//! `launcher/tests/security_regressions.rs`, which has the table of bypass classes).
//!
//! This suite grows with every bypass found: one test per bypass class, each written so that
//! it fails on the code before the fix.

use std::path::Path;
use std::process::Command;

use crate::harness::*;
use crate::require_engine;

/// `git init` in the workspace on the host, owned by the agent's uid (1000 when we are root).
fn host_repo(ws: &Path) {
    let git = |args: &[&str]| {
        // The workspace belongs to the agent's uid, not ours: tell git it is safe.
        let o = Command::new("git")
            .args(["-c", "safe.directory=*"])
            .args(args)
            .current_dir(ws)
            .output()
            .expect("running git on the host");
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    git(&[
        "-c",
        "user.name=u",
        "-c",
        "user.email=u@x",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "base",
    ]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let st = Command::new("chown")
            .args(["-R", "1000:1000"])
            .arg(ws)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

fn line_value(out: &str, key: &str) -> Option<String> {
    out.lines().find_map(|l| {
        l.strip_prefix(&format!("{key}="))
            .map(|v| v.trim().to_string())
    })
}

/// Bypass 7: the agent set `core.fsmonitor` / planted `.git/hooks/post-commit`, which ran on
/// the host at the user's next `git status`. Now they are read-only in the bottle, `.git`
/// cannot be swapped, and `git commit` still works.
#[test]
fn git_config_and_hooks_are_read_only_but_commits_work() {
    require_engine!();
    let h = home("gitro");
    host_repo(&h.workspace);
    let r = run_script(
        &h,
        // One stream: the agent's stdout and stderr interleave in the launcher's output.
        r#"exec 2>&1
           git config core.fsmonitor 'sh -c "id > /tmp/m" #'; echo "config_rc=$?"
           { echo '#!/bin/sh'; echo 'id > /tmp/m'; } > .git/hooks/post-commit; echo "hook_rc=$?"
           echo '[filter "x"]' >> .git/info/attributes; echo "info_rc=$?"
           mv .git .git-old; echo "mv_rc=$?"
           echo hi > f && git add f && git commit -qm agent-commit; echo "commit_rc=$?""#,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    for key in ["config_rc", "hook_rc", "info_rc", "mv_rc"] {
        assert_ne!(
            line_value(&r.stderr, key).as_deref(),
            Some("0"),
            "{key}: {}",
            r.stderr
        );
    }
    assert_eq!(
        line_value(&r.stderr, "commit_rc").as_deref(),
        Some("0"),
        "{}",
        r.stderr
    );
    let config = std::fs::read_to_string(h.workspace.join(".git/config")).unwrap();
    assert!(!config.contains("fsmonitor"), "{config}");
    assert!(!h.workspace.join(".git/hooks/post-commit").exists());
    assert!(h.workspace.join(".git").is_dir() && !h.workspace.join(".git-old").exists());
    let log = Command::new("git")
        .args([
            "-c",
            "safe.directory=*",
            "-c",
            "core.fsmonitor=false",
            "log",
            "--format=%s",
        ])
        .current_dir(&h.workspace)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&log.stdout).contains("agent-commit"));
    assert_eq!(r.result["git"]["protected"], true, "{}", r.result);
    assert_eq!(
        r.result["git"]["changes"],
        serde_json::json!([]),
        "{}",
        r.result
    );
}

/// Bypass 7, opted out: with `protect_git = false` the agent can plant a hook, and bottle says
/// so on stderr and in `--json`.
#[test]
fn git_changes_are_reported_when_not_prevented() {
    require_engine!();
    let h = home("gitopen");
    host_repo(&h.workspace);
    std::fs::write(
        h.home.join("bottles/e2e-open.toml"),
        "extends = \"e2e\"\nprotect_git = false\n",
    )
    .unwrap();
    let o = bottle_cmd(&h)
        .args([
            "run",
            "--json",
            "e2e-open",
            "--",
            "bash",
            "-c",
            "printf '#!/bin/sh\\nid\\n' > .git/hooks/post-commit",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let result: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(result["git"]["protected"], false, "{result} {stderr}");
    assert_eq!(
        result["git"]["changes"][0]["path"], ".git/hooks/post-commit",
        "{result}"
    );
    assert!(
        stderr.contains("WARNING: the agent changed git metadata"),
        "{stderr}"
    );
}

/// Bypass 10: OSC 52 / OSC 0 / CSI sequences in the agent's output reached the terminal raw.
#[test]
fn run_output_escapes_terminal_sequences() {
    require_engine!();
    let h = home("osc");
    let r = run_script(
        &h,
        r"printf '\033]52;c;cHduZWQ=\007'; printf '\033]0;title\033\\' >&2; printf '\302\233' ; echo done",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        !r.stderr.contains('\u{1b}') && !r.stderr.contains('\u{9b}'),
        "{:?}",
        r.stderr
    );
    assert!(
        r.stderr.contains("\\x1b]52;c;cHduZWQ=\\x07"),
        "{:?}",
        r.stderr
    );
    assert!(r.stderr.contains("\\u{9b}"), "{:?}", r.stderr);
}

/// Bypass (model sidecars, first cut): a model container on the bottle network could use the
/// proxy sidecar like the agent — its credentialed routes included (the injected token on
/// `upstream.test/auth/*`). Models now live on their own network, where no sidecar listener is
/// reachable. The model asks the proxy at every sidecar address for the credentialed route.
#[test]
fn a_model_sidecar_cannot_use_the_proxy_or_its_credentials() {
    require_engine!();
    let h = home("sec-model-proxy");
    crate::models::model_bottle(&h, "e2e-model", "FAKE_MODEL_ANSWER = \"x\"", "");
    let child = bottle_cmd(&h)
        .args([
            "run",
            "e2e-model",
            "--",
            "bash",
            "-c",
            "touch /workspace/up; for i in $(seq 600); do [ -e /workspace/done ] && break; sleep 0.1; done",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for_file(
        &h.workspace.join("up"),
        std::time::Duration::from_secs(120)
    ));
    let model = docker_ok(&[
        "ps",
        "-q",
        "--filter",
        "label=io.bottle.role=model",
        "--filter",
        "label=io.bottle.bottle=e2e-model",
    ]);
    let model = model.lines().next().expect("the model runs").to_string();
    let bid = docker_ok(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"io.bottle.id\"}}",
        &model,
    ]);
    let ips = docker_ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        &format!("bottle-{bid}-sidecar"),
    ]);
    let py = format!(
        r#"import socket
for ip in {ips:?}.split():
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((ip, 3128))
        s.sendall(b"GET http://upstream.test/auth/echo HTTP/1.1\r\nHost: upstream.test\r\n\r\n")
        print("PROXY-ANSWERED", ip, s.recv(200))
    except Exception as e:
        print("refused", ip, type(e).__name__)
"#
    );
    let o = docker(&["exec", &model, "python3", "-c", &py]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    std::fs::write(h.workspace.join("done"), "").unwrap();
    let _ = child.wait_with_output();
    assert!(ips.split_whitespace().count() >= 2, "{ips}");
    assert!(
        o.status.success()
            && !out.contains("PROXY-ANSWERED")
            && out.matches("refused").count() >= 2,
        "a model reached the proxy: {out}"
    );
    assert!(!out.contains(&h.secret));
}
