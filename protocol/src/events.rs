//! The lines the sidecar writes on stdout in bottle mode, read by the launcher from the
//! container's attached stdout (docs/design.md, "Sidecar bootstrap" and "Git gate").
//!
//! Every line is one JSON object. Lines with an `event` key are [`Event`]s, encoded with
//! [`Event::to_line`] (no trailing newline) or [`Event::write_line`]; lines without one are the
//! proxy's audit records (`{"ts":…,"decision":"allow|deny",…}`, docs/design.md "Audit
//! record"), which the proxy crate writes itself. The launcher classifies each line with
//! [`Line::parse`].
//!
//! Fixed lines, byte for byte: `{"event":"ready"}` once every listener is bound (before any
//! audit line), `{"event":"audit_synced"}` after a [`crate::lifeline::SYNC`], and
//! `{"event":"launcher_gone"}` when the lifeline reaches EOF. The DNS counts are
//! `{"event":"dns","answered":N,"refused":M}`. Git gate records are `{"event":"git","op":…}`
//! (see [`GitEvent`]); they hold no secret: remote names, refs, object ids, counts, rule ids.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One event line of the sidecar's stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Every listener (proxy, DNS, git gate) is bound; the agent may start.
    Ready,
    /// Every audit record decided before the [`crate::lifeline::SYNC`] has been written.
    AuditSynced,
    /// The lifeline (stdin) reached EOF; the sidecar stops.
    LauncherGone,
    /// The DNS responder's counts so far (written when they change; never a name).
    Dns {
        /// Queries answered with the sidecar's address (or NODATA for its name).
        answered: u64,
        /// Queries for any other name, malformed or unsupported.
        refused: u64,
    },
    /// A git gate audit record.
    Git(GitEvent),
}

impl Event {
    /// The event as one JSON line, without the newline.
    pub fn to_line(&self) -> String {
        // Only strings, integers and string-keyed maps: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// Writes the event as one line (with the newline) and flushes `w`.
    pub fn write_line(&self, mut w: impl std::io::Write) -> std::io::Result<()> {
        let mut line = self.to_line();
        line.push('\n');
        w.write_all(line.as_bytes())?;
        w.flush()
    }

    /// The event on `line` (surrounding whitespace ignored), if it is one this version knows.
    pub fn from_line(line: &str) -> Option<Event> {
        match Line::parse(line) {
            Line::Event(e) => Some(e),
            _ => None,
        }
    }
}

/// A git gate audit record (`{"event":"git","op":"fetch|push|ticket",…}`). Readers need `op`
/// and `result` (fetch, push); the other fields default when absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GitEvent {
    /// A fetch, audited at its ref advertisement (when the mirror is refreshed from upstream).
    Fetch {
        /// The remote's name.
        #[serde(default)]
        remote: String,
        /// `ok`, or `error` (upstream unreachable: the fetch is refused, fail closed).
        result: GitResult,
        /// Why it failed (no secret: the gate scrubs credentials from messages).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// How long it took.
        #[serde(default)]
        duration_ms: u64,
    },
    /// A push.
    Push(GitPush),
    /// A human decided a review ticket (`bottle approve` / `bottle deny`).
    Ticket(GitTicket),
}

/// The outcome of a git gate operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GitResult {
    /// A fetch was served.
    Ok,
    /// The operation failed before a decision (a push that could not start, a failed fetch).
    Error,
    /// A push was scanned clean and accepted upstream.
    Accepted,
    /// A push was rejected (policy, secrets, upstream, timeout).
    Rejected,
}

/// A push record: the pre-receive hook's report (refs, scan counts, rule ids, decision).
///
/// Only `result` is required when reading: the launcher counts pushes by it, and a record
/// missing a detail still counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitPush {
    /// The remote's name.
    #[serde(default)]
    pub remote: String,
    /// `accepted`, `rejected`, or `error` when receive-pack could not even start.
    pub result: GitResult,
    /// The hook's decision: `accepted`, `policy`, `secrets`, `upstream`, `error`, `timeout`.
    #[serde(default)]
    pub decision: String,
    /// The ref updates.
    #[serde(default)]
    pub refs: Vec<GitRefUpdate>,
    /// Objects scanned.
    #[serde(default)]
    pub objects: u64,
    /// Bytes scanned.
    #[serde(default)]
    pub bytes: u64,
    /// Time the object scan took, milliseconds.
    #[serde(default)]
    pub scan_ms: u64,
    /// Findings by rule id (counts only, never the matched text).
    #[serde(default)]
    pub findings: BTreeMap<String, u64>,
    /// Tickets this push opened or still waits on.
    #[serde(default)]
    pub tickets: Vec<String>,
    /// Tickets whose approval let this push through.
    #[serde(default)]
    pub approved: Vec<String>,
    /// Why it failed, when `result` is `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long the push took.
    #[serde(default)]
    pub duration_ms: u64,
}

/// One ref update of a [`GitPush`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitRefUpdate {
    /// The ref name.
    #[serde(rename = "ref")]
    pub name: String,
    /// The old object id (all zeros for a create).
    pub old: String,
    /// The new object id (all zeros for a delete).
    pub new: String,
}

/// A ticket decision record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitTicket {
    /// `approve` or `deny`.
    pub decision: TicketDecision,
    /// The ticket id.
    pub ticket: String,
    /// The remote pushed to.
    pub remote: String,
    /// The rule that held the push.
    pub rule: String,
    /// The file path or ref name, if any.
    pub path: Option<String>,
    /// The commit it was found in, if known.
    pub commit: Option<String>,
    /// The human's reason.
    pub reason: Option<String>,
}

/// What a human decided about a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketDecision {
    /// Approved: the next push of the same finding goes through.
    Approve,
    /// Denied: the finding stays refused.
    Deny,
}

/// One line of the sidecar's stdout, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// An event this version knows.
    Event(Event),
    /// An object with an `event` key this version does not know (or whose fields do not
    /// match): a newer sidecar, or a bug. Carries nothing of the line.
    UnknownEvent,
    /// A JSON object without `event`: one of the proxy's audit records.
    Record(serde_json::Map<String, serde_json::Value>),
    /// Not a JSON object (a diagnostic), or blank.
    Text,
}

impl Line {
    /// Classifies one line (surrounding whitespace ignored).
    pub fn parse(line: &str) -> Line {
        match serde_json::from_str::<serde_json::Value>(line.trim()) {
            Ok(serde_json::Value::Object(m)) if m.contains_key("event") => {
                serde_json::from_value(serde_json::Value::Object(m))
                    .map(Line::Event)
                    .unwrap_or(Line::UnknownEvent)
            }
            Ok(serde_json::Value::Object(m)) => Line::Record(m),
            _ => Line::Text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_lines_are_byte_for_byte_what_the_docs_say() {
        assert_eq!(Event::Ready.to_line(), r#"{"event":"ready"}"#);
        assert_eq!(Event::AuditSynced.to_line(), r#"{"event":"audit_synced"}"#);
        assert_eq!(
            Event::LauncherGone.to_line(),
            r#"{"event":"launcher_gone"}"#
        );
        assert_eq!(
            Event::Dns {
                answered: 3,
                refused: 1
            }
            .to_line(),
            r#"{"event":"dns","answered":3,"refused":1}"#
        );
        let mut out = Vec::new();
        Event::Ready.write_line(&mut out).unwrap();
        assert_eq!(out, b"{\"event\":\"ready\"}\n");
    }

    #[test]
    fn every_event_round_trips() {
        let events = [
            Event::Ready,
            Event::AuditSynced,
            Event::LauncherGone,
            Event::Dns {
                answered: 0,
                refused: 7,
            },
            Event::Git(GitEvent::Fetch {
                remote: "origin".into(),
                result: GitResult::Error,
                reason: Some("upstream unreachable".into()),
                duration_ms: 12,
            }),
            Event::Git(GitEvent::Push(GitPush {
                remote: "origin".into(),
                result: GitResult::Rejected,
                decision: "secrets".into(),
                refs: vec![GitRefUpdate {
                    name: "refs/heads/main".into(),
                    old: "0".repeat(40),
                    new: "a".repeat(40),
                }],
                objects: 3,
                bytes: 120,
                scan_ms: 1,
                findings: [("github-pat".to_string(), 1)].into_iter().collect(),
                tickets: vec![],
                approved: vec!["0123456789ab".into()],
                reason: None,
                duration_ms: 40,
            })),
            Event::Git(GitEvent::Ticket(GitTicket {
                decision: TicketDecision::Approve,
                ticket: "0123456789ab".into(),
                remote: "origin".into(),
                rule: "generic-assignment".into(),
                path: Some("conf/app.env".into()),
                commit: None,
                reason: Some("a fixture".into()),
            })),
        ];
        for e in events {
            let line = e.to_line();
            assert!(!line.contains('\n'), "{line}");
            assert_eq!(
                Line::parse(&format!("  {line}\r\n")),
                Line::Event(e.clone())
            );
            assert_eq!(Event::from_line(&line), Some(e));
        }
    }

    #[test]
    fn git_lines_keep_their_documented_shape() {
        let v: serde_json::Value = serde_json::from_str(
            &Event::Git(GitEvent::Push(GitPush {
                remote: "o".into(),
                result: GitResult::Accepted,
                decision: "accepted".into(),
                refs: vec![GitRefUpdate {
                    name: "refs/heads/main".into(),
                    old: "1".into(),
                    new: "2".into(),
                }],
                objects: 2,
                bytes: 10,
                scan_ms: 0,
                findings: BTreeMap::new(),
                tickets: vec![],
                approved: vec![],
                reason: None,
                duration_ms: 5,
            }))
            .to_line(),
        )
        .unwrap();
        assert_eq!(v["event"], "git");
        assert_eq!(v["op"], "push");
        assert_eq!(v["result"], "accepted");
        assert_eq!(v["refs"][0]["ref"], "refs/heads/main");
        // A ticket record spells absent fields as null, as before.
        let t = Event::Git(GitEvent::Ticket(GitTicket {
            decision: TicketDecision::Deny,
            ticket: "t".into(),
            remote: "o".into(),
            rule: "r".into(),
            path: None,
            commit: None,
            reason: None,
        }))
        .to_line();
        assert!(
            t.contains(r#""decision":"deny""#) && t.contains(r#""path":null"#),
            "{t}"
        );
    }

    #[test]
    fn lines_are_classified() {
        assert!(matches!(
            Line::parse(r#"{"ts":"x","decision":"allow","reason":"ok"}"#),
            Line::Record(m) if m["decision"] == "allow"
        ));
        assert_eq!(Line::parse(r#"{"event":"teleport"}"#), Line::UnknownEvent);
        assert_eq!(
            Line::parse(r#"{"event":"dns","answered":"x"}"#),
            Line::UnknownEvent
        );
        assert_eq!(Line::parse("not json"), Line::Text);
        assert_eq!(Line::parse("[1]"), Line::Text);
        assert_eq!(Line::parse(""), Line::Text);
        assert_eq!(Event::from_line(r#"{"decision":"deny"}"#), None);
    }
}
