//! Approval tickets: findings of review-marked rules (generic high-entropy assignments,
//! JWT-shaped strings) that a human may judge false positives.
//!
//! A push whose only findings are review-marked ones is rejected with one ticket per finding;
//! the user runs `bottle approve <ticket>` (or `bottle deny`) on the host, which reaches the
//! sidecar with `docker exec` — never through the agent's network or terminal — and writes the
//! decision into the gate's private state directory. The next push of the same object with
//! the same rule at the same path passes (or is refused with the denial's reason). A ticket
//! id is derived from (remote, object, rule, path), so a changed file needs a new approval.
//!
//! Layout under the tickets directory (0700, in the sidecar's tmpfs): `pending/<id>.json`,
//! `approved/<id>.json`, `denied/<id>.json`, each a [`Ticket`] (with the decision's reason).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::scan::{Place, PushFinding};

/// Rules whose findings can be approved by a human: the generic ones (`generic-*`) and JWTs.
/// Every other rule, and the bottle's own secrets, always reject.
pub fn is_review_rule(rule: &str) -> bool {
    rule == "jwt" || rule.starts_with("generic-")
}

/// One finding awaiting (or given) a decision. Holds no part of the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The ticket id (12 hex digits).
    pub id: String,
    /// The remote pushed to.
    pub remote: String,
    /// The rule.
    pub rule: String,
    /// The file path or ref name, if any.
    pub path: Option<String>,
    /// The commit (or tag object) it was found in, if known.
    pub commit: Option<String>,
    /// `blob`, `commit`, `tag`, `path`, `ref`.
    pub place: String,
    /// Seconds since the epoch when the ticket was opened (or decided).
    pub time: u64,
    /// The decision's reason (approved/denied tickets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The decision recorded for a ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No decision yet.
    Pending,
    /// Approved, with the user's reason.
    Approved(String),
    /// Denied, with the user's reason.
    Denied(String),
}

/// Why a ticket operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// No pending ticket has this id.
    #[error("no pending ticket {0} in this bottle")]
    Unknown(String),
    /// The id is not 12 hex digits.
    #[error("{0:?} is not a ticket id (12 hex digits)")]
    BadId(String),
    /// The store could not be read or written.
    #[error("ticket store: {0}")]
    Io(String),
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn place_name(p: Place) -> &'static str {
    match p {
        Place::Blob => "blob",
        Place::Commit => "commit",
        Place::Tag => "tag",
        Place::PathName => "path",
        Place::RefName => "ref",
    }
}

/// The ticket of a finding on `remote`.
pub fn ticket_for(remote: &str, f: &PushFinding) -> Ticket {
    let mut h = Sha256::new();
    for part in [
        "bottle-ticket-v1",
        remote,
        f.object.as_deref().unwrap_or(""),
        &f.rule_id,
        f.path.as_deref().unwrap_or(""),
        f.member.as_deref().unwrap_or(""),
        place_name(f.place),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let id: String = h.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ticket {
        id,
        remote: remote.to_string(),
        rule: f.rule_id.clone(),
        path: f.path.clone(),
        commit: f.commit.clone(),
        place: place_name(f.place).to_string(),
        time: now(),
        reason: None,
    }
}

/// The ticket store in a directory of the gate's state.
#[derive(Clone, Debug)]
pub struct TicketStore {
    dir: PathBuf,
}

fn check_id(id: &str) -> Result<(), TicketError> {
    if id.len() == 12
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(())
    } else {
        Err(TicketError::BadId(id.chars().take(40).collect()))
    }
}

impl TicketStore {
    /// The store at `dir` (created, 0700, on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        TicketStore { dir: dir.into() }
    }

    fn path(&self, state: &str, id: &str) -> PathBuf {
        self.dir.join(state).join(format!("{id}.json"))
    }

    fn write(&self, state: &str, t: &Ticket) -> Result<(), TicketError> {
        let dir = self.dir.join(state);
        std::fs::create_dir_all(&dir).map_err(|e| TicketError::Io(e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        }
        let json = serde_json::to_vec(t).map_err(|e| TicketError::Io(e.to_string()))?;
        let tmp = dir.join(format!(".{}.tmp", t.id));
        std::fs::write(&tmp, json).map_err(|e| TicketError::Io(e.to_string()))?;
        std::fs::rename(&tmp, self.path(state, &t.id)).map_err(|e| TicketError::Io(e.to_string()))
    }

    fn read(path: &Path) -> Option<Ticket> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// The decision on ticket `id`.
    pub fn decision(&self, id: &str) -> Decision {
        if let Some(t) = Self::read(&self.path("denied", id)) {
            return Decision::Denied(t.reason.unwrap_or_default());
        }
        if let Some(t) = Self::read(&self.path("approved", id)) {
            return Decision::Approved(t.reason.unwrap_or_default());
        }
        Decision::Pending
    }

    /// Records `t` as pending (unless it was decided already).
    pub fn open(&self, t: &Ticket) -> Result<(), TicketError> {
        if self.decision(&t.id) != Decision::Pending || self.path("pending", &t.id).exists() {
            return Ok(());
        }
        self.write("pending", t)
    }

    /// The pending tickets, oldest first.
    pub fn pending(&self) -> Vec<Ticket> {
        self.list("pending")
    }

    /// The tickets in `state` (`pending`, `approved`, `denied`), oldest first.
    pub fn list(&self, state: &str) -> Vec<Ticket> {
        let mut out: Vec<Ticket> = std::fs::read_dir(self.dir.join(state))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| Self::read(&e.path()))
            .collect();
        out.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        out
    }

    /// Approves (or with `approve = false` denies) pending ticket `id` with `reason`.
    pub fn decide(&self, id: &str, approve: bool, reason: &str) -> Result<Ticket, TicketError> {
        check_id(id)?;
        let pending = self.path("pending", id);
        let mut t = Self::read(&pending).ok_or_else(|| TicketError::Unknown(id.to_string()))?;
        t.reason = Some(reason.chars().take(500).collect());
        t.time = now();
        self.write(if approve { "approved" } else { "denied" }, &t)?;
        let _ = std::fs::remove_file(pending);
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: &str, object: &str) -> PushFinding {
        PushFinding {
            rule_id: rule.into(),
            place: Place::Blob,
            commit: Some("c0ffee".into()),
            path: Some("conf/app.yaml".into()),
            member: None,
            object: Some(object.into()),
            line: 3,
        }
    }

    #[test]
    fn review_rules_are_the_generic_ones_and_jwt() {
        assert!(is_review_rule("jwt"));
        assert!(is_review_rule("generic-secret-assignment"));
        assert!(!is_review_rule("github-pat"));
        assert!(!is_review_rule("known-secret"));
    }

    #[test]
    fn ids_follow_object_rule_and_path() {
        let a = ticket_for("origin", &finding("jwt", "b1"));
        assert_eq!(a.id.len(), 12);
        assert_eq!(
            a,
            Ticket {
                time: a.time,
                ..ticket_for("origin", &finding("jwt", "b1"))
            }
        );
        assert_ne!(a.id, ticket_for("origin", &finding("jwt", "b2")).id);
        assert_ne!(a.id, ticket_for("other", &finding("jwt", "b1")).id);
        assert_ne!(a.id, ticket_for("origin", &finding("generic-x", "b1")).id);
    }

    #[test]
    fn open_approve_deny_and_bad_ids() {
        let d = tempfile::tempdir().unwrap();
        let s = TicketStore::new(d.path().join("tickets"));
        let t = ticket_for("origin", &finding("jwt", "b1"));
        s.open(&t).unwrap();
        assert_eq!(s.pending().len(), 1);
        assert_eq!(s.decision(&t.id), Decision::Pending);
        let done = s.decide(&t.id, true, "test fixture").unwrap();
        assert_eq!(done.reason.as_deref(), Some("test fixture"));
        assert_eq!(s.decision(&t.id), Decision::Approved("test fixture".into()));
        assert!(s.pending().is_empty());
        s.open(&t).unwrap();
        assert!(s.pending().is_empty(), "a decided ticket is not reopened");
        assert!(matches!(
            s.decide(&t.id, false, "x"),
            Err(TicketError::Unknown(_))
        ));
        let u = ticket_for("origin", &finding("jwt", "b2"));
        s.open(&u).unwrap();
        s.decide(&u.id, false, "real key").unwrap();
        assert_eq!(s.decision(&u.id), Decision::Denied("real key".into()));
        assert!(matches!(
            s.decide("../../etc", true, "x"),
            Err(TicketError::BadId(_))
        ));
    }
}
