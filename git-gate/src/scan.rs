//! Scanning the objects a push adds: every blob (whole, binary included), every commit and
//! annotated tag object (messages, identities, trailers), and every path name, with the shared
//! scanner's `decode::scan_file`.
//!
//! Objects are enumerated with `git rev-list --objects <new tips> --not --all` and read with
//! `git cat-file --batch`, run inside the `pre-receive` hook: git points those children at the
//! quarantine through `GIT_OBJECT_DIRECTORY` / `GIT_ALTERNATE_OBJECT_DIRECTORIES`, and `--all`
//! is the mirror's refs, i.e. upstream's state at the advertisement. (gix does not honour the
//! quarantine environment and would need a hand-written two-store lookup; the git subprocesses
//! are exact and already a dependency of the gate.)

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use bottle_scanner::Scanner;

/// Errors that stop a scan; each rejects the push.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A git child failed.
    #[error("{0}")]
    Git(String),
    /// A blob is larger than the cap: it cannot be scanned whole, so the push is refused.
    #[error("blob {object} ({path}) is {size} bytes, over the gate's limit of {limit} bytes")]
    TooLarge {
        /// The blob id.
        object: String,
        /// Its path in the pushed tree.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An archive in a blob could not be unpacked within the limits: it cannot be scanned
    /// whole, so the push is refused.
    #[error("blob {object} ({path}) is an archive that cannot be scanned whole: {reason}")]
    Archive {
        /// The blob id.
        object: String,
        /// Its path in the pushed tree.
        path: String,
        /// Why (a limit or a malformed archive).
        reason: String,
    },
}

/// What kind of data a finding was in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A file's contents.
    Blob,
    /// A commit object (message, author, committer, trailers).
    Commit,
    /// An annotated tag object.
    Tag,
    /// A path name in a tree.
    PathName,
    /// A ref name.
    RefName,
}

/// One finding in a push. Holds no part of the secret.
#[derive(Clone, Debug)]
pub struct PushFinding {
    /// The scanner rule that fired.
    pub rule_id: String,
    /// Where it was.
    pub place: Place,
    /// The commit (for blobs: the oldest pushed commit that added the blob at a path, if found).
    pub commit: Option<String>,
    /// The file path (blobs and path names) or ref name.
    pub path: Option<String>,
    /// For a file that is an archive: the member the finding is in (`zip:dir/a.txt`).
    pub member: Option<String>,
    /// The object the finding is in (blob, commit or tag id; none for names).
    pub object: Option<String>,
    /// 1-based line in the object (0: not known, e.g. inside an archive member).
    pub line: usize,
}

impl std::fmt::Display for PushFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let commit = self
            .commit
            .as_deref()
            .map(|c| &c[..c.len().min(12)])
            .unwrap_or("?");
        let path = self.path.as_deref().unwrap_or("");
        match self.place {
            Place::Blob => match &self.member {
                Some(m) => write!(
                    f,
                    "rule {} in file {path}, archive member {m} (added in commit {commit})",
                    self.rule_id
                ),
                None => write!(
                    f,
                    "rule {} in file {path} line {} (added in commit {commit})",
                    self.rule_id, self.line
                ),
            },
            Place::Commit => write!(
                f,
                "rule {} in the message/header of commit {commit} line {}",
                self.rule_id, self.line
            ),
            Place::Tag => write!(
                f,
                "rule {} in tag object {commit} line {}",
                self.rule_id, self.line
            ),
            Place::PathName => write!(f, "rule {} in the path name {path:?}", self.rule_id),
            Place::RefName => write!(f, "rule {} in the ref name {path:?}", self.rule_id),
        }
    }
}

/// The outcome of scanning a push.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Objects read (blobs, commits, tags).
    pub objects: usize,
    /// Bytes scanned.
    pub bytes: u64,
    /// Findings, in object order.
    pub findings: Vec<PushFinding>,
    /// Findings dropped because the same match was already in the parent version of the path.
    pub suppressed: usize,
}

/// Scans every object reachable from `tips` and not from the repository's refs. `tips` must be
/// object ids (checked). Runs `git` from `PATH` with the caller's environment (the hook's
/// quarantine), in the current directory's repository.
pub fn scan_push(
    git: &Path,
    tips: &[String],
    scanner: &Scanner,
    max_blob: u64,
) -> Result<ScanReport, ScanError> {
    let mut report = ScanReport::default();
    let tips: Vec<&String> = tips.iter().filter(|t| !crate::policy::is_zero(t)).collect();
    if tips.is_empty() {
        return Ok(report);
    }
    if tips
        .iter()
        .any(|t| !t.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ScanError::Git("pushed value is not an object id".into()));
    }
    let out = Command::new(git)
        .args(["rev-list", "--objects"])
        .args(&tips)
        .args(["--not", "--all"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ScanError::Git(format!("cannot run git rev-list: {e}")))?;
    if !out.status.success() {
        return Err(ScanError::Git(format!(
            "git rev-list failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut order: Vec<String> = Vec::new();
    let mut paths: HashMap<String, String> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (oid, path) = match line.split_once(' ') {
            Some((o, p)) => (o.to_string(), Some(p.to_string())),
            None => (line.to_string(), None),
        };
        if let Some(p) = path {
            for f in bottle_scanner::decode::scan_file(scanner, p.as_bytes()) {
                report.findings.push(PushFinding {
                    rule_id: f.rule_id,
                    place: Place::PathName,
                    commit: None,
                    path: Some(p.clone()),
                    member: None,
                    object: None,
                    line: 1,
                });
            }
            paths.insert(oid.clone(), p);
        }
        order.push(oid);
    }
    // Types and sizes first, so an oversized blob is refused before anything is read.
    let checks = cat_file(git, "--batch-check", &order, |_, _| Ok(()))?;
    let mut wanted = Vec::new();
    for (oid, kind, size) in &checks {
        match kind.as_str() {
            "blob" => {
                if *size > max_blob {
                    return Err(ScanError::TooLarge {
                        object: oid.clone(),
                        path: paths.get(oid).cloned().unwrap_or_default(),
                        size: *size,
                        limit: max_blob,
                    });
                }
                wanted.push(oid.clone());
            }
            "commit" | "tag" => wanted.push(oid.clone()),
            _ => {}
        }
    }
    let mut blob_hits: Vec<BlobHit> = Vec::new();
    let archive_limits = bottle_scanner::decode::ArchiveLimits::default();
    cat_file(git, "--batch", &wanted, |(oid, kind, _), data| {
        report.objects += 1;
        report.bytes += data.len() as u64;
        let found = if kind == "blob" {
            bottle_scanner::decode::scan_file_deep(scanner, data, &archive_limits).map_err(|e| {
                ScanError::Archive {
                    object: oid.clone(),
                    path: paths.get(oid).cloned().unwrap_or_default(),
                    reason: e.to_string(),
                }
            })?
        } else {
            bottle_scanner::decode::scan_file(scanner, data)
        };
        for f in found {
            let member = f
                .location
                .as_deref()
                .filter(|l| l.starts_with("zip:") || l.starts_with("tar:") || l.starts_with("gz:"))
                .map(|l| l.trim_end_matches(':').to_string());
            let line = if member.is_some() {
                0
            } else {
                line_of(data, f.offset)
            };
            let (place, commit, path) = match kind.as_str() {
                "blob" => (Place::Blob, None, paths.get(oid).cloned()),
                "commit" => (Place::Commit, Some(oid.clone()), None),
                _ => (Place::Tag, Some(oid.clone()), None),
            };
            // The matched bytes, kept only to compare with the parent version (never shown):
            // only for raw matches of pattern rules (decoded findings and the bottle's own
            // secrets are never suppressed).
            let secret = (place == Place::Blob
                && f.location.is_none()
                && f.known_secret.is_none()
                && f.offset + f.len <= data.len()
                && f.len > 0)
                .then(|| data[f.offset..f.offset + f.len].to_vec());
            let finding = PushFinding {
                rule_id: f.rule_id,
                place,
                commit,
                path,
                member,
                object: Some(oid.clone()),
                line,
            };
            if place == Place::Blob {
                blob_hits.push(BlobHit {
                    finding,
                    blob: oid.clone(),
                    secret,
                });
            } else {
                report.findings.push(finding);
            }
        }
        Ok(())
    })?;
    // Name the commit that added each flagged blob (only for findings: cheap), and drop a
    // finding whose exact match is already in that commit's first parent at the same path
    // (a secret already upstream is not re-flagged when the agent edits the file). By
    // induction this only ever excuses bytes that upstream already had: a parent version
    // that is itself new was scanned too.
    let mut introduced: HashMap<String, Option<String>> = HashMap::new();
    for h in &blob_hits {
        if introduced.contains_key(&h.blob) {
            continue;
        }
        let out = Command::new(git)
            .args(["log", "--format=%H", "--reverse"])
            .arg(format!("--find-object={}", h.blob))
            .args(&tips)
            .args(["--not", "--all", "--"])
            .stdin(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_string)
            });
        introduced.insert(h.blob.clone(), out);
    }
    let mut parents: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    for mut h in blob_hits {
        h.finding.commit = introduced.get(&h.blob).cloned().flatten();
        if let (Some(c), Some(p), Some(secret)) = (&h.finding.commit, &h.finding.path, &h.secret) {
            let key = format!("{c}^:{p}");
            let parent = parents
                .entry(key.clone())
                .or_insert_with(|| read_blob(git, &key, max_blob));
            if parent
                .as_ref()
                .is_some_and(|data| memchr::memmem::find(data, secret).is_some())
            {
                report.suppressed += 1;
                continue;
            }
        }
        report.findings.push(h.finding);
    }
    Ok(report)
}

/// A finding in a blob before its commit is known.
struct BlobHit {
    finding: PushFinding,
    blob: String,
    secret: Option<Vec<u8>>,
}

/// The contents of blob `rev` (`<commit>^:<path>`), if it exists and is at most `max` bytes.
fn read_blob(git: &Path, rev: &str, max: u64) -> Option<Vec<u8>> {
    let size = Command::new(git)
        .args(["cat-file", "-s", rev])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u64>()
                .ok()
        })?;
    if size > max {
        return None;
    }
    Command::new(git)
        .args(["cat-file", "blob", rev])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| o.stdout)
}

/// Runs `git cat-file <mode>` over `oids`, returning (oid, type, size) per object and handing
/// each object's contents to `each` in `--batch` mode.
fn cat_file(
    git: &Path,
    mode: &str,
    oids: &[String],
    mut each: impl FnMut(&(String, String, u64), &[u8]) -> Result<(), ScanError>,
) -> Result<Vec<(String, String, u64)>, ScanError> {
    let mut out = Vec::new();
    if oids.is_empty() {
        return Ok(out);
    }
    let mut child = Command::new(git)
        .args(["cat-file", mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ScanError::Git(format!("cannot run git cat-file: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input: Vec<u8> = oids
        .iter()
        .flat_map(|o| format!("{o}\n").into_bytes())
        .collect();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut reader = BufReader::new(child.stdout.take().expect("piped"));
    let mut header = Vec::new();
    let mut data = Vec::new();
    let result = (|| {
        for _ in oids {
            header.clear();
            reader
                .read_until(b'\n', &mut header)
                .map_err(|e| ScanError::Git(format!("git cat-file: {e}")))?;
            let text = String::from_utf8_lossy(&header);
            let parts: Vec<&str> = text.trim_end().split(' ').collect();
            let [oid, kind, size] = parts[..] else {
                return Err(ScanError::Git(format!(
                    "git cat-file: unexpected {:?}",
                    text.trim_end()
                )));
            };
            let size: u64 = size
                .parse()
                .map_err(|_| ScanError::Git("git cat-file: bad size".into()))?;
            let entry = (oid.to_string(), kind.to_string(), size);
            if mode == "--batch" {
                data.clear();
                (&mut reader)
                    .take(size + 1)
                    .read_to_end(&mut data)
                    .map_err(|e| ScanError::Git(format!("git cat-file: {e}")))?;
                if data.len() as u64 != size + 1 {
                    return Err(ScanError::Git("git cat-file: short object".into()));
                }
                data.pop();
                each(&entry, &data)?;
            }
            out.push(entry);
        }
        Ok(())
    })();
    drop(reader);
    let _ = writer.join();
    let _ = child.kill();
    let _ = child.wait();
    result.map(|()| out)
}

fn line_of(data: &[u8], offset: usize) -> usize {
    let end = offset.min(data.len());
    data[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based() {
        assert_eq!(line_of(b"a\nb\nc", 0), 1);
        assert_eq!(line_of(b"a\nb\nc", 4), 3);
        assert_eq!(line_of(b"a", 99), 1);
    }

    #[test]
    fn display_names_rule_path_and_commit_only() {
        let f = PushFinding {
            rule_id: "github-pat".into(),
            place: Place::Blob,
            commit: Some("0123456789abcdef0123".into()),
            path: Some("conf/app.env".into()),
            member: None,
            object: None,
            line: 3,
        };
        assert_eq!(
            f.to_string(),
            "rule github-pat in file conf/app.env line 3 (added in commit 0123456789ab)"
        );
    }
}
