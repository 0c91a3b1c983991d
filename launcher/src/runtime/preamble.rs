//! How a spawned agent gets its session prompt (`bottle spawn --prompt`, gemba's `preamble`):
//! typed as its first message, written to `CLAUDE.md`, appended to a `codex exec` command, or
//! printed as a banner on its terminal. See [`crate::manifest::Preamble`].
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bollard::Docker;

use crate::manifest::Preamble;

/// The file the `claude_md` strategy writes in the workspace.
pub const CLAUDE_MD: &str = "CLAUDE.md";
/// The marker line that starts bottle's block in `CLAUDE.md`.
const MARK: &str = "<!-- bottle: session preamble (removed when the bottle ends) -->";
/// How long the first message waits for the agent to show its prompt.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Output quiet for this long means the agent waits for input.
const QUIET: Duration = Duration::from_millis(1500);
/// An agent that has printed no complete line after this long is typed to anyway: a shell's
/// prompt has no newline, and the engine's log (what capture reads) holds a partial line back
/// until the newline comes. The terminal keeps typed input until the program reads it.
const SILENT: Duration = Duration::from_secs(8);

/// Whether the first message can be typed now: the agent printed and then went quiet, said
/// nothing at all for [`SILENT`], or [`READY_TIMEOUT`] passed.
fn ready_to_type(printed: usize, quiet_for: Duration, waited: Duration) -> bool {
    (printed > 0 && quiet_for >= QUIET)
        || (printed == 0 && waited >= SILENT)
        || waited >= READY_TIMEOUT
}

/// A `CLAUDE.md` written (or extended) for the session; [`ClaudeMd::restore`] puts the
/// workspace back as it was.
#[derive(Debug)]
pub struct ClaudeMd {
    path: PathBuf,
    /// The file's content before, `None` when bottle created it.
    before: Option<Vec<u8>>,
    /// What bottle wrote.
    written: Vec<u8>,
}

impl ClaudeMd {
    /// Writes the preamble to `<workspace>/CLAUDE.md` (after an existing file's content).
    pub fn write(workspace: &Path, prompt: &str) -> Result<ClaudeMd> {
        let path = workspace.join(CLAUDE_MD);
        let meta = std::fs::symlink_metadata(&path);
        if meta.as_ref().is_ok_and(|m| !m.file_type().is_file()) {
            bail!(
                "{} is not a regular file; the claude_md preamble will not write through it",
                path.display()
            );
        }
        let before = match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut written = before.clone().unwrap_or_default();
        if !written.is_empty() && !written.ends_with(b"\n") {
            written.push(b'\n');
        }
        if !written.is_empty() {
            written.push(b'\n');
        }
        written.extend_from_slice(format!("{MARK}\n{}\n", prompt.trim_end()).as_bytes());
        std::fs::write(&path, &written).with_context(|| format!("writing {}", path.display()))?;
        Ok(ClaudeMd {
            path,
            before,
            written,
        })
    }

    /// Restores the file (or removes the one bottle created) unless the agent changed it, in
    /// which case it is left and a warning names it.
    pub fn restore(self) {
        match std::fs::read(&self.path) {
            Ok(now) if now == self.written => {
                let r = match &self.before {
                    Some(b) => std::fs::write(&self.path, b),
                    None => std::fs::remove_file(&self.path),
                };
                if let Err(e) = r {
                    eprintln!(
                        "bottle: warning: restoring {}: {e}",
                        self.path.display()
                    );
                }
            }
            Ok(_) => eprintln!(
                "bottle: warning: {} changed during the session; left as the agent wrote it (bottle's block starts at the line {MARK:?})",
                self.path.display()
            ),
            Err(_) => {}
        }
    }
}

/// The command for `codex_exec` and `stdout_banner` (the others keep `cmd`); `None` when
/// the strategy does not change it.
pub fn command_for(
    strategy: Preamble,
    cmd: &[String],
    prompt: &str,
) -> Result<Option<Vec<String>>> {
    match strategy {
        Preamble::CodexExec => {
            let mut c = cmd.to_vec();
            if !c.iter().any(|a| a == "exec") {
                c.push("exec".into());
            }
            c.push(prompt.into());
            Ok(Some(c))
        }
        Preamble::StdoutBanner => {
            if cmd.is_empty() {
                bail!("the stdout_banner preamble needs the agent's command (binary) to wrap");
            }
            let mut c: Vec<String> = [
                "sh",
                "-c",
                r#"printf '%s\n' "$BOTTLE_PREAMBLE"; exec "$@""#,
                "sh",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            c.extend(cmd.iter().cloned());
            Ok(Some(c))
        }
        Preamble::FirstMessage | Preamble::ClaudeMd => Ok(None),
    }
}

/// Waits until the agent of bottle `id` has printed something and then gone quiet (it waits
/// for input), or printed nothing for [`SILENT`], or [`READY_TIMEOUT`], then types `prompt` and
/// Enter.
pub async fn send_first_message(docker: &Docker, id: &str, prompt: &str) -> Result<()> {
    let start = Instant::now();
    let mut last = (0usize, Instant::now());
    loop {
        let c = super::docker::lifecycle::capture(
            docker,
            id,
            200,
            None,
            super::lifecycle::CaptureMode::Raw,
        )
        .await?;
        let size: usize = c.lines.iter().map(String::len).sum();
        if size != last.0 {
            last = (size, Instant::now());
        } else if ready_to_type(size, last.1.elapsed(), start.elapsed()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut payload = prompt.as_bytes().to_vec();
    payload.push(b'\r');
    super::docker::lifecycle::send_keys(docker, id, &payload).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_message_waits_for_quiet_or_silence() {
        let s = Duration::from_secs;
        assert!(
            !ready_to_type(10, Duration::from_millis(500), s(2)),
            "still printing"
        );
        assert!(ready_to_type(10, QUIET, s(2)), "printed, then quiet");
        assert!(!ready_to_type(0, s(2), s(2)), "silent, briefly");
        assert!(
            ready_to_type(0, SILENT, SILENT),
            "a shell prompt (no newline yet)"
        );
        assert!(
            ready_to_type(10, Duration::ZERO, READY_TIMEOUT),
            "never quiet"
        );
    }

    #[test]
    fn claude_md_is_created_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let g = ClaudeMd::write(d.path(), "Fix issue 7.").unwrap();
        let text = std::fs::read_to_string(d.path().join(CLAUDE_MD)).unwrap();
        assert!(
            text.contains("Fix issue 7.") && text.starts_with(MARK),
            "{text}"
        );
        g.restore();
        assert!(!d.path().join(CLAUDE_MD).exists());
    }

    #[test]
    fn an_existing_claude_md_is_extended_and_restored() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(CLAUDE_MD);
        std::fs::write(&p, "# Project rules").unwrap();
        let g = ClaudeMd::write(d.path(), "Fix issue 7.").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.starts_with("# Project rules\n\n") && text.contains("Fix issue 7."),
            "{text}"
        );
        g.restore();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "# Project rules");
    }

    #[test]
    fn a_claude_md_the_agent_changed_is_left() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(CLAUDE_MD);
        let g = ClaudeMd::write(d.path(), "x").unwrap();
        std::fs::write(&p, "agent notes").unwrap();
        g.restore();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "agent notes");
    }

    #[test]
    fn a_symlinked_claude_md_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join(CLAUDE_MD)).unwrap();
        assert!(ClaudeMd::write(d.path(), "x").is_err());
    }

    #[test]
    fn commands_per_strategy() {
        let cmd = vec!["codex".to_string(), "--model".into(), "m".into()];
        assert_eq!(
            command_for(Preamble::CodexExec, &cmd, "do it")
                .unwrap()
                .unwrap(),
            ["codex", "--model", "m", "exec", "do it"]
        );
        let b = command_for(Preamble::StdoutBanner, &cmd, "hi")
            .unwrap()
            .unwrap();
        assert_eq!(&b[..2], ["sh", "-c"]);
        assert_eq!(&b[4..], &cmd[..]);
        assert!(command_for(Preamble::StdoutBanner, &[], "hi").is_err());
        assert!(command_for(Preamble::FirstMessage, &cmd, "hi")
            .unwrap()
            .is_none());
    }
}
