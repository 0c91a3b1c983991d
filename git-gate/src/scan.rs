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
    /// 1-based line in the object.
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
            Place::Blob => write!(
                f,
                "rule {} in file {path} line {} (added in commit {commit})",
                self.rule_id, self.line
            ),
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
    let mut blob_hits: Vec<PushFinding> = Vec::new();
    cat_file(git, "--batch", &wanted, |(oid, kind, _), data| {
        report.objects += 1;
        report.bytes += data.len() as u64;
        for f in bottle_scanner::decode::scan_file(scanner, data) {
            let line = line_of(data, f.offset);
            let (place, commit, path) = match kind.as_str() {
                "blob" => (Place::Blob, None, paths.get(oid).cloned()),
                "commit" => (Place::Commit, Some(oid.clone()), None),
                _ => (Place::Tag, Some(oid.clone()), None),
            };
            let finding = PushFinding {
                rule_id: f.rule_id,
                place,
                commit,
                path,
                line,
            };
            if place == Place::Blob {
                blob_hits.push(finding);
            } else {
                report.findings.push(finding);
            }
        }
        Ok(())
    })?;
    // Name the commit that introduced each flagged blob (only for findings: cheap).
    let mut introduced: HashMap<String, Option<String>> = HashMap::new();
    for (oid, _, _) in &checks {
        if blob_hits.is_empty() {
            break;
        }
        let Some(p) = paths.get(oid) else { continue };
        if !blob_hits.iter().any(|h| h.path.as_deref() == Some(p)) || introduced.contains_key(p) {
            continue;
        }
        let out = Command::new(git)
            .args(["log", "--format=%H", "--reverse"])
            .arg(format!("--find-object={oid}"))
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
            })
            .filter(|s| !s.is_empty());
        introduced.insert(p.clone(), out);
    }
    for mut h in blob_hits {
        h.commit = h
            .path
            .as_ref()
            .and_then(|p| introduced.get(p).cloned().flatten());
        report.findings.push(h);
    }
    Ok(report)
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
            line: 3,
        };
        assert_eq!(
            f.to_string(),
            "rule github-pat in file conf/app.env line 3 (added in commit 0123456789ab)"
        );
    }
}
