//! Summaries of the sidecar's audit lines (one JSON object per decision on its stdout; the line
//! kinds are `bottle_protocol::events::Line`).
use bottle_protocol::events::{Event, GitEvent, GitResult, Line};
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
    /// Model sidecars' own egress (records with a `client`), counted apart from the agent's.
    #[serde(skip_serializing_if = "ModelCounts::is_empty")]
    pub models: ModelCounts,
}

/// Counts of the model egress proxy's records.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ModelCounts {
    /// Requests of models on their own routes, allowed.
    pub allowed: u64,
    /// Requests of models, denied.
    pub denied: u64,
    /// Connections to the model egress proxy from an address that is not a model's (the
    /// agent trying its way in); also counted in [`AuditSummary::denied`].
    pub refused: u64,
}

impl ModelCounts {
    /// Nothing counted (no model egress at all).
    pub fn is_empty(&self) -> bool {
        *self == ModelCounts::default()
    }
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
    /// Adds one line of sidecar output (blank lines are not counted).
    pub fn add_line(&mut self, line: &str) {
        if !line.trim().is_empty() {
            self.add(&Line::parse(line));
        }
    }

    /// Adds one classified, non-blank line of sidecar output: git gate events and the proxy's
    /// audit records are counted, anything else (other events, diagnostics) is an other line.
    pub fn add(&mut self, line: &Line) {
        let record = match line {
            Line::Event(Event::Git(g)) => {
                match g {
                    GitEvent::Push(p) if p.result == GitResult::Accepted => {
                        self.git.pushes_accepted += 1
                    }
                    GitEvent::Push(_) => self.git.pushes_rejected += 1,
                    GitEvent::Fetch {
                        result: GitResult::Ok,
                        ..
                    } => self.git.fetches += 1,
                    GitEvent::Fetch { .. } => self.git.fetches_failed += 1,
                    GitEvent::Ticket(_) => self.other_lines += 1,
                }
                return;
            }
            Line::Record(m) => m,
            Line::Event(_) | Line::UnknownEvent | Line::Text => {
                self.other_lines += 1;
                return;
            }
        };
        if let Some(client) = record.get("client").and_then(|c| c.as_str()) {
            let allow = record.get("decision").and_then(|d| d.as_str()) == Some("allow");
            match (client.starts_with("model:"), allow) {
                (true, true) => self.models.allowed += 1,
                (true, false) => self.models.denied += 1,
                (false, _) => {
                    self.models.refused += 1;
                    self.denied += 1;
                }
            }
            return;
        }
        match record.get("decision").and_then(|d| d.as_str()) {
            Some("allow") => self.allowed += 1,
            Some("deny") => self.denied += 1,
            _ => {
                self.other_lines += 1;
                return;
            }
        }
        let reason = record.get("reason").and_then(|r| r.as_str()).unwrap_or("");
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
        assert!(s.models.is_empty());
        let m = r#"{"decision":"allow","reason":"ok","client":"model:coder"}
{"decision":"deny","reason":"no_route","client":"model:coder"}
{"decision":"deny","reason":"client_refused","client":"unknown:10.1.0.3"}
"#;
        let s = super::AuditSummary::from_text(m);
        assert_eq!((s.allowed, s.denied), (0, 1), "the agent's own counts");
        assert_eq!(
            (s.models.allowed, s.models.denied, s.models.refused),
            (1, 1, 1)
        );
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

    #[test]
    fn counts_the_lines_the_sidecar_writes() {
        use bottle_protocol::events::{Event, GitEvent, GitPush, GitResult};
        let push = |result| {
            Event::Git(GitEvent::Push(GitPush {
                remote: "origin".into(),
                result,
                decision: "secrets".into(),
                refs: vec![],
                objects: 1,
                bytes: 2,
                scan_ms: 0,
                findings: Default::default(),
                tickets: vec![],
                approved: vec![],
                reason: None,
                duration_ms: 3,
            }))
        };
        let fetch = |result| {
            Event::Git(GitEvent::Fetch {
                remote: "origin".into(),
                result,
                reason: None,
                duration_ms: 1,
            })
        };
        let mut s = super::AuditSummary::default();
        for e in [
            Event::Ready,
            push(GitResult::Accepted),
            push(GitResult::Rejected),
            push(GitResult::Error),
            fetch(GitResult::Ok),
            fetch(GitResult::Error),
            Event::Dns {
                answered: 1,
                refused: 0,
            },
        ] {
            s.add_line(&e.to_line());
        }
        s.add_line("");
        let g = &s.git;
        assert_eq!(
            (
                g.pushes_accepted,
                g.pushes_rejected,
                g.fetches,
                g.fetches_failed,
                s.other_lines
            ),
            (1, 2, 1, 1, 2)
        );
    }
}
