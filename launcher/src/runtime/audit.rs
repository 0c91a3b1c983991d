//! Summaries of the sidecar's audit lines (one JSON object per decision on its stdout).
use serde::Serialize;

/// Counts of audit decisions.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AuditSummary {
    /// Requests allowed.
    pub allowed: u64,
    /// Requests denied (any reason, DLP included).
    pub denied: u64,
    /// Requests denied or redacted by DLP.
    pub dlp: u64,
    /// Git gate: pushes forwarded upstream, pushes rejected (policy, secrets, upstream),
    /// fetches served and fetches refused (upstream unreachable: fail closed).
    pub git: GitCounts,
    /// Lines that were not audit records (diagnostics).
    pub other_lines: u64,
}

/// Counts of the git gate's audit records.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GitCounts {
    /// Pushes accepted (scanned clean and accepted upstream).
    pub pushes_accepted: u64,
    /// Pushes rejected.
    pub pushes_rejected: u64,
    /// Fetches served from a fresh mirror.
    pub fetches: u64,
    /// Fetches refused.
    pub fetches_failed: u64,
}

impl AuditSummary {
    /// Adds one line of sidecar output.
    pub fn add_line(&mut self, line: &str) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
            if !line.trim().is_empty() {
                self.other_lines += 1;
            }
            return;
        };
        if v.get("event").and_then(|e| e.as_str()) == Some("git") {
            let result = v.get("result").and_then(|r| r.as_str()).unwrap_or("");
            match (v.get("op").and_then(|o| o.as_str()), result) {
                (Some("push"), "accepted") => self.git.pushes_accepted += 1,
                (Some("push"), _) => self.git.pushes_rejected += 1,
                (Some("fetch"), "ok") => self.git.fetches += 1,
                (Some("fetch"), _) => self.git.fetches_failed += 1,
                _ => self.other_lines += 1,
            }
            return;
        }
        match v.get("decision").and_then(|d| d.as_str()) {
            Some("allow") => self.allowed += 1,
            Some("deny") => self.denied += 1,
            _ => {
                self.other_lines += 1;
                return;
            }
        }
        let reason = v.get("reason").and_then(|r| r.as_str()).unwrap_or("");
        if reason == "dlp" || reason.starts_with("dlp") {
            self.dlp += 1;
        }
    }

    /// Summarises many lines.
    pub fn from_text(text: &str) -> AuditSummary {
        let mut s = AuditSummary::default();
        text.lines().for_each(|l| s.add_line(l));
        s
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_decisions() {
        let t = r#"{"decision":"allow","reason":"ok"}
{"decision":"deny","reason":"no_route"}
{"decision":"deny","reason":"dlp","rule":"github-pat"}
not json
{"event":"ready"}
"#;
        let s = super::AuditSummary::from_text(t);
        assert_eq!((s.allowed, s.denied, s.dlp, s.other_lines), (1, 2, 1, 2));
        let g = r#"{"event":"git","op":"push","result":"accepted","decision":"accepted"}
{"event":"git","op":"push","result":"rejected","decision":"secrets"}
{"event":"git","op":"fetch","result":"ok"}
{"event":"git","op":"fetch","result":"error"}
"#;
        let s = super::AuditSummary::from_text(g);
        assert_eq!(
            (
                s.git.pushes_accepted,
                s.git.pushes_rejected,
                s.git.fetches,
                s.git.fetches_failed,
                s.allowed
            ),
            (1, 1, 1, 1, 0)
        );
    }
}
