//! The `pre-receive` hook (`bottle-git-hook`): ref policy, secret scan, upstream push.
//!
//! git's `receive-pack` runs it with the pushed objects in a quarantine directory and the
//! `<old> <new> <ref>` lines on stdin; everything it prints reaches the agent as `remote:`
//! lines. It exits 0 only when every update is allowed, no object holds a secret and upstream
//! accepted the push; otherwise git discards the quarantine and updates no ref.
//!
//! Its configuration ([`HookConfig`]) arrives as JSON in the `BOTTLE_GIT_GATE_HOOK`
//! environment variable, set by the gate on the `receive-pack` child only.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::config::PushPolicy;
use crate::policy::{check, RefUpdate};
use crate::scan::{scan_push, Place, PushFinding};

/// The environment variable holding the hook's JSON configuration.
pub const CONFIG_ENV: &str = "BOTTLE_GIT_GATE_HOOK";

/// The environment variable naming the file the hook writes its [`HookReport`] to (JSON).
pub const REPORT_ENV: &str = "BOTTLE_GIT_GATE_REPORT";

/// What the hook decided, for the gate's audit record. Holds no secret: rule ids, ref names
/// and object ids only.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HookReport {
    /// The ref updates, as `(ref, old, new)`.
    pub refs: Vec<(String, String, String)>,
    /// `accepted`, `policy` (refused by the ref policy), `secrets` (findings), `upstream`
    /// (upstream refused), `error` (anything else).
    pub decision: String,
    /// Objects scanned.
    pub objects: usize,
    /// Bytes scanned.
    pub bytes: u64,
    /// Time the object scan took (enumeration, reading and scanning), milliseconds.
    #[serde(default)]
    pub scan_ms: u64,
    /// Rule ids of the findings (one entry per finding).
    pub findings: Vec<String>,
    /// Tickets this push opened or still waits on (review-marked findings).
    #[serde(default)]
    pub tickets: Vec<String>,
    /// Tickets whose approval let this push through.
    #[serde(default)]
    pub approved: Vec<String>,
}

/// Most findings listed to the agent.
const MAX_SHOWN: usize = 20;

/// What the hook needs to know about the remote it guards.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HookConfig {
    /// The remote's name (for messages).
    pub remote: String,
    /// Upstream URL (no credentials in it).
    pub upstream: String,
    /// The push policy.
    pub policy: PushPolicy,
    /// Largest blob accepted.
    pub max_blob_bytes: u64,
    /// Deadline of the upstream push, seconds.
    pub push_timeout_secs: u64,
    /// git binary.
    pub git_program: PathBuf,
    /// Known secrets: (name, base64 of the value). Scanned for in pushes, scrubbed from output.
    pub known_secrets: Vec<(String, String)>,
    /// The approval tickets ([`crate::tickets`]); without it review-marked findings reject
    /// like any other.
    #[serde(default)]
    pub tickets_dir: Option<PathBuf>,
}

/// Runs the hook: reads the configuration from [`CONFIG_ENV`], the updates from `input`,
/// writes messages to `out`. Returns the exit code (0 accept, 1 reject).
pub fn run_pre_receive(input: &mut dyn BufRead, out: &mut dyn Write) -> i32 {
    let say = |out: &mut dyn Write, msg: &str| {
        let _ = writeln!(out, "bottle-git-gate: {msg}");
    };
    let cfg: HookConfig = match std::env::var(CONFIG_ENV)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
    {
        Some(c) => c,
        None => {
            say(out, "push rejected: the gate's hook is not configured (BOTTLE_GIT_GATE_HOOK missing or invalid)");
            return 1;
        }
    };
    let mut report = HookReport {
        decision: "error".into(),
        ..Default::default()
    };
    let code = match run(&cfg, input, out, &mut report) {
        Ok(()) => {
            report.decision = "accepted".into();
            0
        }
        Err(lines) => {
            for l in lines {
                say(out, &l);
            }
            1
        }
    };
    if let Some(path) = std::env::var_os(REPORT_ENV) {
        if let Ok(json) = serde_json::to_vec(&report) {
            let _ = std::fs::write(path, json);
        }
    }
    code
}

fn run(
    cfg: &HookConfig,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    report_out: &mut HookReport,
) -> Result<(), Vec<String>> {
    let mut updates = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => match RefUpdate::parse(&line) {
                Some(u) => updates.push(u),
                None => {
                    return Err(vec![format!(
                        "push rejected: malformed hook input line {:?}",
                        line.trim_end()
                    )])
                }
            },
            Err(e) => return Err(vec![format!("push rejected: cannot read hook input: {e}")]),
        }
        if updates.len() > 1000 {
            return Err(vec![
                "push rejected: more than 1000 ref updates in one push".into(),
            ]);
        }
    }
    if updates.is_empty() {
        return Ok(());
    }
    report_out.refs = updates
        .iter()
        .map(|u| (u.name.clone(), u.old.clone(), u.new.clone()))
        .collect();
    // 1. Ref policy.
    let mut refused = Vec::new();
    for u in &updates {
        let ff = || is_ancestor(&cfg.git_program, &u.old, &u.new);
        if let Err(reason) = check(&cfg.policy, u, ff) {
            refused.push(reason);
        }
    }
    if !refused.is_empty() {
        report_out.decision = "policy".into();
        let mut lines = vec![format!(
            "push to {:?} rejected by the ref policy; nothing was pushed upstream:",
            cfg.remote
        )];
        lines.extend(refused.into_iter().map(|r| format!("  {r}")));
        return Err(lines);
    }
    // 2. Secret scan.
    let mut builder = bottle_scanner::Scanner::builder().default_rules(true);
    let mut secrets = Vec::new();
    for (name, b64) in &cfg.known_secrets {
        let Ok(v) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            return Err(vec![
                "push rejected: the gate's known secrets are malformed".into(),
            ]);
        };
        secrets.push(String::from_utf8_lossy(&v).into_owned());
        if v.len() >= bottle_scanner::MIN_KNOWN_SECRET_LEN {
            builder = builder.known_secret(name.clone(), v);
        }
    }
    let scanner = builder
        .build()
        .map_err(|e| vec![format!("push rejected: cannot build the scanner: {e}")])?;
    let mut findings: Vec<PushFinding> = Vec::new();
    for u in &updates {
        for f in scanner.scan(u.name.as_bytes()) {
            findings.push(PushFinding {
                rule_id: f.rule_id,
                place: Place::RefName,
                commit: None,
                path: Some(u.name.clone()),
                member: None,
                object: None,
                line: 1,
            });
        }
    }
    let tips: Vec<String> = updates.iter().map(|u| u.new.clone()).collect();
    let scan_started = std::time::Instant::now();
    let report = scan_push(&cfg.git_program, &tips, &scanner, cfg.max_blob_bytes)
        .map_err(|e| vec![format!("push rejected: {e}; nothing was pushed upstream")])?;
    report_out.scan_ms = scan_started.elapsed().as_millis() as u64;
    findings.extend(report.findings);
    report_out.objects = report.objects;
    report_out.bytes = report.bytes;
    report_out.findings = findings.iter().map(|f| f.rule_id.clone()).collect();
    let store = cfg
        .tickets_dir
        .as_ref()
        .map(crate::tickets::TicketStore::new);
    if let Some(store) = store.as_ref().filter(|_| {
        !findings.is_empty()
            && findings
                .iter()
                .all(|f| crate::tickets::is_review_rule(&f.rule_id))
    }) {
        // Only review-marked findings: a human decides, per ticket.
        use crate::tickets::{ticket_for, Decision};
        let mut waiting = Vec::new();
        for f in &findings {
            let t = ticket_for(&cfg.remote, f);
            match store.decision(&t.id) {
                Decision::Approved(_) => report_out.approved.push(t.id),
                Decision::Denied(reason) => {
                    waiting.push(format!("  {f} — ticket {} was denied: {reason}", t.id))
                }
                Decision::Pending => {
                    if let Err(e) = store.open(&t) {
                        return Err(vec![format!(
                            "push rejected: {e}; nothing was pushed upstream"
                        )]);
                    }
                    report_out.tickets.push(t.id.clone());
                    waiting.push(format!("  {f} — ticket {}", t.id));
                }
            }
        }
        if !waiting.is_empty() {
            report_out.decision = "review".into();
            let mut lines = vec![format!(
                "push to {:?} held for review: {} finding(s) of rules a human may judge false positives; nothing was pushed upstream:",
                cfg.remote,
                waiting.len()
            )];
            lines.extend(waiting);
            lines.push("if these are not secrets, ask the user to run `bottle approve <ticket> --reason \"…\"` on the host and push again; otherwise remove them from every commit of the push".into());
            return Err(lines);
        }
        findings.clear();
    }
    if !findings.is_empty() {
        report_out.decision = "secrets".into();
        let mut lines = vec![format!(
            "push to {:?} rejected: {} secret finding(s); nothing was pushed upstream:",
            cfg.remote,
            findings.len()
        )];
        for f in findings.iter().take(MAX_SHOWN) {
            lines.push(format!("  {f}"));
        }
        if findings.len() > MAX_SHOWN {
            lines.push(format!("  … and {} more", findings.len() - MAX_SHOWN));
        }
        lines.push("remove the secret from every commit of the push (git rebase -i, git commit --amend) and push again".into());
        return Err(lines);
    }
    let _ = writeln!(
        out,
        "bottle-git-gate: scanned {} objects ({} bytes): clean; pushing to upstream",
        report.objects, report.bytes
    );
    // 3. Forward upstream.
    let fwd = crate::forward::push_upstream(
        &cfg.git_program,
        &cfg.upstream,
        &updates,
        &secrets,
        Duration::from_secs(cfg.push_timeout_secs),
    );
    for l in &fwd.lines {
        let _ = writeln!(out, "bottle-git-gate: upstream: {l}");
    }
    if !fwd.accepted {
        report_out.decision = "upstream".into();
        return Err(vec![format!(
            "push to {:?} rejected: upstream refused it (see above); the mirror is unchanged",
            cfg.remote
        )]);
    }
    Ok(())
}

/// `git merge-base --is-ancestor old new`: false on any error (fail closed).
fn is_ancestor(git: &std::path::Path, old: &str, new: &str) -> bool {
    Command::new(git)
        .args(["merge-base", "--is-ancestor", old, new])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_its_configuration_the_hook_rejects() {
        // No test in this crate sets CONFIG_ENV.
        assert!(std::env::var_os(CONFIG_ENV).is_none());
        let mut input: &[u8] = b"";
        let mut out = Vec::new();
        assert_eq!(run_pre_receive(&mut input, &mut out), 1);
        assert!(String::from_utf8_lossy(&out).contains("not configured"));
    }

    #[test]
    fn malformed_input_rejects_before_anything_runs() {
        let cfg = HookConfig {
            remote: "p".into(),
            upstream: "file:///nonexistent".into(),
            policy: PushPolicy::default(),
            max_blob_bytes: 1,
            push_timeout_secs: 1,
            git_program: "/nonexistent/git".into(),
            known_secrets: Vec::new(),
            tickets_dir: None,
        };
        let mut input: &[u8] = b"--upload-pack=evil x refs/heads/main\n";
        let mut out = Vec::new();
        let e = run(&cfg, &mut input, &mut out, &mut HookReport::default()).unwrap_err();
        assert!(e[0].contains("malformed hook input line"), "{e:?}");
    }
}
