//! The start gate of an unattended agent (`bottle run`).
//!
//! Starting a container costs this engine ~300 ms, and a bottle has two. To not pay them in
//! series, the agent container is started beside the sidecar, but its command is held behind
//! a gate: `/bin/sh` reads one line from the agent's stdin and only then `exec`s the real
//! command (the image's entrypoint and command, unchanged). The launcher writes that line
//! once the sidecar has printed its ready line, then closes stdin. If the launcher never
//! opens the gate (the sidecar failed, the launcher died), stdin reaches EOF and the command
//! never runs: exit code [`GATE_CLOSED_EXIT`].
//!
//! The gate is a convenience, not a security boundary: before the sidecar is ready the agent
//! has no route anywhere (its only network is the internal one), so an early command would
//! only see refused connections. Images without `/bin/sh` are started after the sidecar.
use std::pin::Pin;

use anyhow::{Context, Result};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Exit code of the agent when the gate was closed without being opened.
pub const GATE_CLOSED_EXIT: i64 = 125;

/// The shell program of the gate; `$@` is the agent's real command line.
pub const GATE_SCRIPT: &str = "IFS= read -r _ || { echo 'bottle: the sidecar never became ready; the agent command did not run' >&2; exit 125; }; exec \"$@\"";

/// `$0` of the gate's shell (shows in `ps` inside the bottle).
const GATE_ARGV0: &str = "bottle-gate";

/// The agent's entrypoint and command with the gate in front: the gate's shell, then the
/// image's own entrypoint, then `cmd` (which must already be resolved: setting an entrypoint
/// clears the image's default command).
pub fn gated(image_entrypoint: &[String], cmd: &[String]) -> (Vec<String>, Vec<String>) {
    let mut entrypoint: Vec<String> = vec![
        "/bin/sh".into(),
        "-c".into(),
        GATE_SCRIPT.into(),
        GATE_ARGV0.into(),
    ];
    entrypoint.extend(image_entrypoint.iter().cloned());
    (entrypoint, cmd.to_vec())
}

/// Opens the gate: writes the line the gate waits for and closes the agent's stdin.
pub async fn open(mut stdin: Pin<Box<dyn AsyncWrite + Send>>) -> Result<()> {
    async {
        stdin.write_all(b"go\n").await?;
        stdin.flush().await?;
        stdin.shutdown().await
    }
    .await
    .context("opening the agent's start gate (its stdin)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn run_gate(stdin: &[u8], cmd: &[&str]) -> std::process::Output {
        let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        let (ep, cmd) = gated(&[], &cmd);
        let mut child = Command::new(&ep[0])
            .args(&ep[1..])
            .args(&cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    #[test]
    fn entrypoint_keeps_the_images_own_in_front_of_the_command() {
        let (ep, cmd) = gated(&["/entry".into(), "--x".into()], &["claude".into()]);
        assert_eq!(&ep[..2], ["/bin/sh", "-c"]);
        assert_eq!(&ep[3..], ["bottle-gate", "/entry", "--x"]);
        assert_eq!(cmd, ["claude"]);
    }

    #[test]
    fn opened_gate_runs_the_command_with_its_arguments_intact() {
        let out = run_gate(b"go\n", &["printf", "%s|", "a b", "$HOME", "'q'"]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b|$HOME|'q'|");
    }

    #[test]
    fn the_command_sees_stdin_after_the_gate_line_only() {
        let out = run_gate(b"go\nrest\n", &["cat"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "rest\n");
    }

    #[test]
    fn closed_gate_never_runs_the_command() {
        let out = run_gate(b"", &["sh", "-c", "echo RAN"]);
        assert_eq!(out.status.code(), Some(GATE_CLOSED_EXIT as i32));
        assert!(!String::from_utf8_lossy(&out.stdout).contains("RAN"));
        assert!(String::from_utf8_lossy(&out.stderr).contains("never became ready"));
    }
}
