//! The start gate of an unattended agent (`bottle run`).
//!
//! Starting a container costs this engine ~300 ms, and a bottle has two. To not pay them in
//! series, the agent container is started beside the sidecar, but its command is held behind
//! a gate: `/bin/sh` reads one line from the agent's stdin and only then runs the real command
//! (the image's entrypoint and command, unchanged). The launcher writes that line — a fresh
//! nonce — once the sidecar has printed its ready line, then closes stdin. If the launcher
//! never opens the gate (the sidecar failed, the launcher died), stdin reaches EOF and the
//! command never runs: exit code [`GATE_CLOSED_EXIT`].
//!
//! When the command ends, the gate writes `\nbottle-exit:<nonce>:<code>\n` on stderr and exits
//! with that code. The launcher strips that trailer from the output and has the exit code
//! without waiting for the engine to process the container's exit (~60 ms). The agent cannot
//! forge the trailer without the nonce, and could only lie about its own exit code anyway.
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
pub const GATE_SCRIPT: &str = "IFS= read -r bottle_gate || { echo 'bottle: the sidecar never became ready; the agent command did not run' >&2; exit 125; }; \"$@\"; bottle_rc=$?; printf '\\nbottle-exit:%s:%s\\n' \"$bottle_gate\" \"$bottle_rc\" >&2; exit \"$bottle_rc\"";

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

/// Opens the gate: writes the line the gate waits for (the nonce of its exit trailer) and
/// closes the agent's stdin.
pub async fn open(mut stdin: Pin<Box<dyn AsyncWrite + Send>>, nonce: &str) -> Result<()> {
    async {
        stdin.write_all(format!("{nonce}\n").as_bytes()).await?;
        stdin.flush().await?;
        stdin.shutdown().await
    }
    .await
    .context("opening the agent's start gate (its stdin)")
}

/// A fresh nonce for the exit trailer (24 hex digits from the OS's random source).
pub fn new_nonce() -> std::io::Result<String> {
    Ok(format!(
        "{}{}",
        super::labels::new_id()?,
        super::labels::new_id()?
    ))
}

/// Finds the gate's exit trailer in a chunk of the agent's stderr: returns the chunk without
/// it and the exit code. The gate writes the trailer last, in one write, so it is whole within
/// one chunk.
pub fn take_exit_trailer(chunk: &[u8], nonce: &str) -> Option<(Vec<u8>, i64)> {
    let tag = format!("\nbottle-exit:{nonce}:");
    let at = memchr::memmem::find(chunk, tag.as_bytes())?;
    let rest = &chunk[at + tag.len()..];
    let end = rest.iter().position(|&b| b == b'\n')?;
    let code = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    let mut kept = chunk[..at].to_vec();
    kept.extend_from_slice(&rest[end + 1..]);
    Some((kept, code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    const NONCE: &str = "0123456789abcdef01234567";

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

    fn gate_line() -> Vec<u8> {
        format!("{NONCE}\n").into_bytes()
    }

    #[test]
    fn opened_gate_runs_the_command_with_its_arguments_intact() {
        let out = run_gate(&gate_line(), &["printf", "%s|", "a b", "$HOME", "'q'"]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b|$HOME|'q'|");
    }

    #[test]
    fn the_command_sees_stdin_after_the_gate_line_only() {
        let mut input = gate_line();
        input.extend_from_slice(b"rest\n");
        let out = run_gate(&input, &["cat"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "rest\n");
    }

    #[test]
    fn exit_code_comes_back_in_the_trailer_and_the_trailer_strips_cleanly() {
        let out = run_gate(
            &gate_line(),
            &[
                "sh",
                "-c",
                "echo partial >&2; printf no-newline >&2; exit 7",
            ],
        );
        assert_eq!(out.status.code(), Some(7));
        let (kept, code) = take_exit_trailer(&out.stderr, NONCE).expect("trailer");
        assert_eq!(code, 7);
        assert_eq!(String::from_utf8_lossy(&kept), "partial\nno-newline");
        // Killed by a signal: the shell's 128+n.
        let out = run_gate(&gate_line(), &["sh", "-c", "kill -TERM $$"]);
        assert_eq!(take_exit_trailer(&out.stderr, NONCE).unwrap().1, 143);
        // Another nonce (a forgery) is not taken.
        assert!(take_exit_trailer(b"\nbottle-exit:ffff:0\n", NONCE).is_none());
    }

    #[test]
    fn closed_gate_never_runs_the_command() {
        let out = run_gate(b"", &["sh", "-c", "echo RAN"]);
        assert_eq!(out.status.code(), Some(GATE_CLOSED_EXIT as i32));
        assert!(!String::from_utf8_lossy(&out.stdout).contains("RAN"));
        assert!(String::from_utf8_lossy(&out.stderr).contains("never became ready"));
    }
}
