//! Library side of `bottle scan`: walk files/dirs/stdin or a git range, print findings.
//!
//! The launcher's clap subcommand fills a [`ScanArgs`] and calls [`run`], using the returned
//! value as the process exit code: `0` no findings, `1` findings, `2` error (bad rule file,
//! unreadable path, git failure). Human output is one line per finding,
//! `path:line:col rule-id preview`; `--json` prints one JSON object per finding
//! (`{"path","line","col","rule_id","description","preview","offset","len"}`).
//!
//! Files, stdin and the added lines of a git range all go through
//! [`decode::scan_file`](crate::decode::scan_file), i.e. the decoders the proxy runs on request
//! bodies (JSON strings, forms, base64 values, percent-encoded spans) plus unescaping of
//! doubly escaped text, so a file, a request and a pushed blob are judged alike.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Finding, Scanner};

/// Arguments of `bottle scan` (clap-free; the launcher maps its flags onto these fields).
#[derive(Debug, Clone)]
pub struct ScanArgs {
    /// Files or directories to scan; empty or `-` means stdin.
    pub paths: Vec<PathBuf>,
    /// Print JSON lines instead of human output.
    pub json: bool,
    /// Scan the lines added by the commits in `A..B` (and their messages) instead of paths.
    pub git_range: Option<String>,
    /// Repository for `git_range` (default: current directory).
    pub repo: Option<PathBuf>,
    /// Extra rule files (TOML).
    pub rules: Vec<PathBuf>,
    /// Rule ids to disable (core-floor rules are refused).
    pub disable: Vec<String>,
    /// Do not load the built-in default rules.
    pub no_default_rules: bool,
    /// Files larger than this many bytes are skipped (reported on stderr).
    pub max_file_size: u64,
    /// Print the loaded rules and exit 0.
    pub list_rules: bool,
}

impl Default for ScanArgs {
    fn default() -> Self {
        ScanArgs {
            paths: Vec::new(),
            json: false,
            git_range: None,
            repo: None,
            rules: Vec::new(),
            disable: Vec::new(),
            no_default_rules: false,
            max_file_size: 8 << 20,
            list_rules: false,
        }
    }
}

/// One finding with its file position.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileFinding {
    /// File path (or `-` for stdin, `COMMIT:path` for git ranges).
    pub path: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based byte column.
    pub col: usize,
    /// The finding (redacted).
    #[serde(flatten)]
    pub finding: Finding,
}

/// Result of a scan over paths.
#[derive(Debug, Default)]
pub struct Report {
    /// Findings in walk order.
    pub findings: Vec<FileFinding>,
    /// Files scanned.
    pub files: usize,
    /// Bytes scanned.
    pub bytes: u64,
    /// Skipped paths and why (binary, too large, unreadable).
    pub skipped: Vec<(String, String)>,
    /// Hard errors (unreadable path given on the command line).
    pub errors: Vec<String>,
}

/// Options of [`scan_paths`].
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Skip files larger than this.
    pub max_file_size: u64,
}

fn line_col(data: &[u8], offset: usize) -> (usize, usize) {
    let before = &data[..offset.min(data.len())];
    let line = memchr::memchr_iter(b'\n', before).count() + 1;
    let col = offset - memchr::memrchr(b'\n', before).map(|p| p + 1).unwrap_or(0) + 1;
    (line, col)
}

fn is_binary(data: &[u8]) -> bool {
    memchr::memchr(0, &data[..data.len().min(8000)]).is_some()
}

/// Sets the finding's location to `label:line:col`, followed by the decoder's location (JSON
/// path, `(percent)`, `(unescaped)`) after a space when it has one.
fn place(mut f: Finding, label: &str, line: usize, col: usize) -> Finding {
    let at = format!("{label}:{line}:{col}");
    f.location = Some(match f.location.take() {
        Some(inner) => format!("{at} {inner}"),
        None => at,
    });
    f
}

/// Scans one file's contents with [`decode::scan_file`](crate::decode::scan_file): the same
/// decoders the proxy runs on request bodies.
fn scan_one(scanner: &Scanner, path: &str, data: &[u8], report: &mut Report) {
    report.files += 1;
    report.bytes += data.len() as u64;
    for f in crate::decode::scan_file(scanner, data) {
        let (line, col) = line_col(data, f.offset);
        report.findings.push(FileFinding {
            path: path.to_string(),
            line,
            col,
            finding: place(f, path, line, col),
        });
    }
}

/// Scans files and directories (gitignore-aware via the `ignore` crate, `.git` skipped,
/// binary files and files over the size cap skipped). A path of `-` reads stdin.
pub fn scan_paths(scanner: &Scanner, paths: &[PathBuf], opts: &ScanOptions) -> Report {
    let mut report = Report::default();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut data = Vec::new();
            if let Err(e) = std::io::stdin()
                .take(opts.max_file_size + 1)
                .read_to_end(&mut data)
            {
                report.errors.push(format!("-: cannot read stdin: {e}"));
                continue;
            }
            if data.len() as u64 > opts.max_file_size {
                report.errors.push(format!(
                    "-: stdin is larger than the size cap of {} bytes; raise --max-file-size",
                    opts.max_file_size
                ));
                continue;
            }
            scan_one(scanner, "-", &data, &mut report);
            continue;
        }
        if !p.exists() {
            report
                .errors
                .push(format!("{}: no such file or directory", p.display()));
            continue;
        }
        let walker = ignore::WalkBuilder::new(p)
            .hidden(false)
            .filter_entry(|e| e.file_name() != ".git")
            .sort_by_file_path(|a, b| a.cmp(b))
            .build();
        for entry in walker {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    report
                        .skipped
                        .push((p.display().to_string(), e.to_string()));
                    continue;
                }
            };
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                continue;
            }
            let path = entry.path();
            let shown = path.display().to_string();
            match std::fs::metadata(path) {
                Ok(m) if m.len() > opts.max_file_size => {
                    report.skipped.push((
                        shown,
                        format!("larger than {} bytes (--max-file-size)", opts.max_file_size),
                    ));
                    continue;
                }
                Err(e) => {
                    report.skipped.push((shown, e.to_string()));
                    continue;
                }
                _ => {}
            }
            match std::fs::read(path) {
                Ok(data) if is_binary(&data) => report.skipped.push((shown, "binary".into())),
                Ok(data) => scan_one(scanner, &shown, &data, &mut report),
                Err(e) => report.skipped.push((shown, e.to_string())),
            }
        }
    }
    report
}

/// Scans the lines added by the commits in `range` (`A..B`) and their commit messages, using
/// `git log -p -U0` (merges diffed against their first parent).
pub fn scan_git_range(scanner: &Scanner, repo: &Path, range: &str) -> Result<Report, String> {
    if range.starts_with('-') || range.is_empty() {
        return Err(format!(
            "--git-range {range:?} must be a revision range like A..B"
        ));
    }
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "log",
            "-p",
            "-U0",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--diff-merges=first-parent",
            "--format=%x01commit %H%n%w(0,4,4)%B",
            range,
            "--",
        ])
        .output()
        .map_err(|e| format!("cannot run git: {e}; is git installed?"))?;
    if !out.status.success() {
        return Err(format!(
            "git log {range} failed in {}: {}",
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut report = Report::default();
    // Buffers: (label, text, line numbers of each text line)
    let mut commit = String::new();
    let mut file = String::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut lines: Vec<usize> = Vec::new();
    let mut next_line = 0usize;
    let mut in_msg = false;
    let flush = |label: &str, buf: &mut Vec<u8>, lines: &mut Vec<usize>, report: &mut Report| {
        if buf.is_empty() {
            return;
        }
        report.files += 1;
        report.bytes += buf.len() as u64;
        for f in crate::decode::scan_file(scanner, buf) {
            let (idx, col) = line_col(buf, f.offset);
            let line = lines.get(idx - 1).copied().unwrap_or(idx);
            report.findings.push(FileFinding {
                path: label.to_string(),
                line,
                col,
                finding: place(f, label, line, col),
            });
        }
        buf.clear();
        lines.clear();
    };
    for raw in out.stdout.split(|&b| b == b'\n') {
        if let Some(rest) = raw.strip_prefix(b"\x01commit ") {
            let label = format!("{commit}:{file}");
            flush(&label, &mut buf, &mut lines, &mut report);
            commit = String::from_utf8_lossy(&rest[..rest.len().min(12)]).into_owned();
            file = "(commit message)".into();
            in_msg = true;
            next_line = 0;
            continue;
        }
        if raw.starts_with(b"diff --git ") {
            let label = format!("{commit}:{file}");
            flush(&label, &mut buf, &mut lines, &mut report);
            in_msg = false;
            continue;
        }
        if in_msg {
            if let Some(m) = raw.strip_prefix(b"    ") {
                next_line += 1;
                buf.extend_from_slice(m);
                buf.push(b'\n');
                lines.push(next_line);
            }
            continue;
        }
        if let Some(p) = raw.strip_prefix(b"+++ ") {
            let p = p.strip_prefix(b"b/").unwrap_or(p);
            file = String::from_utf8_lossy(p).into_owned();
            continue;
        }
        if raw.starts_with(b"@@ ") {
            // @@ -a,b +c,d @@
            let s = String::from_utf8_lossy(raw);
            next_line = s
                .split(' ')
                .find(|t| t.starts_with('+'))
                .and_then(|t| t[1..].split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            continue;
        }
        if let Some(added) = raw.strip_prefix(b"+") {
            buf.extend_from_slice(added);
            buf.push(b'\n');
            lines.push(next_line);
            next_line += 1;
        }
    }
    let label = format!("{commit}:{file}");
    flush(&label, &mut buf, &mut lines, &mut report);
    Ok(report)
}

/// Builds the scanner from CLI arguments.
pub fn build_scanner(args: &ScanArgs) -> Result<Scanner, crate::RuleError> {
    let mut b = Scanner::builder().default_rules(!args.no_default_rules);
    for r in &args.rules {
        b = b.rules_file(r)?;
    }
    b.disable(&args.disable)?.build()
}

/// Runs `bottle scan`, printing to stdout/stderr. Returns the exit code (0 clean, 1 findings,
/// 2 error).
pub fn run(args: &ScanArgs) -> i32 {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    run_with(args, &mut stdout.lock(), &mut stderr.lock())
}

/// [`run`] with explicit output streams (for tests).
pub fn run_with(args: &ScanArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let scanner = match build_scanner(args) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(err, "bottle scan: {e}");
            return 2;
        }
    };
    if args.list_rules {
        for r in scanner.rules() {
            let line = if args.json {
                serde_json::to_string(&r).unwrap_or_default()
            } else {
                format!(
                    "{}{}\t{}",
                    r.id,
                    if r.core { " (core)" } else { "" },
                    r.description
                )
            };
            let _ = writeln!(out, "{line}");
        }
        return 0;
    }
    let report = if let Some(range) = &args.git_range {
        let repo = args.repo.clone().unwrap_or_else(|| PathBuf::from("."));
        match scan_git_range(&scanner, &repo, range) {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(err, "bottle scan: {e}");
                return 2;
            }
        }
    } else {
        let paths = if args.paths.is_empty() {
            vec![PathBuf::from("-")]
        } else {
            args.paths.clone()
        };
        scan_paths(
            &scanner,
            &paths,
            &ScanOptions {
                max_file_size: args.max_file_size,
            },
        )
    };
    for f in &report.findings {
        let line = if args.json {
            serde_json::to_string(f).unwrap_or_default()
        } else {
            format!(
                "{}:{}:{} {} {}",
                f.path, f.line, f.col, f.finding.rule_id, f.finding.preview
            )
        };
        let _ = writeln!(out, "{line}");
    }
    for (p, why) in &report.skipped {
        let _ = writeln!(err, "bottle scan: skipped {p}: {why}");
    }
    for e in &report.errors {
        let _ = writeln!(err, "bottle scan: {e}");
    }
    if !args.json {
        let _ = writeln!(
            err,
            "bottle scan: {} finding(s) in {} file(s), {} bytes",
            report.findings.len(),
            report.files,
            report.bytes
        );
    }
    if !report.errors.is_empty() {
        2
    } else if report.findings.is_empty() {
        0
    } else {
        1
    }
}
