//! `bottle pause`, `bottle resume`, `bottle kill`, `bottle exec`, `bottle capture` and
//! `bottle send-keys` on a running bottle: what they return and the pure parts (output
//! rendering, key names). The engine calls are in [`super::docker::lifecycle`].
//!
//! **Pause freezes the agent only; the proxy sidecar keeps running.** The sidecar holds the
//! launcher's lifeline and the bottle's audit stream, and it is the only thing with egress:
//! frozen, it would stop answering the agent's in-flight requests mid-response (the agent's
//! clients see them stall, then time out, after the resume) and stop writing audit records.
//! Running, it finishes what is in flight on the upstream side; the frozen agent reads the
//! answers after the resume (a tunnel idle longer than the proxy's `idle_timeout` is closed,
//! as it would be if the agent idled). Nothing new can start while the agent is frozen.

use anyhow::{bail, Result};
use serde::Serialize;

/// What a lifecycle verb did, for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct VerbResult {
    /// Bottle id.
    pub id: String,
    /// The verb (`pause`, `resume`, `kill`).
    pub verb: &'static str,
    /// Containers it acted on (`role: id`).
    pub containers: Vec<String>,
    /// For `kill`: objects removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<usize>,
}

/// How `bottle capture` renders the agent's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMode {
    /// Terminal control sequences escaped (`\x1b[…`): safe to print, nothing lost.
    Escaped,
    /// Control sequences removed: the text an orchestrator matches on.
    Plain,
    /// Bytes as the agent wrote them (only for a trusted consumer).
    Raw,
}

/// What `bottle capture` returns.
#[derive(Debug, Clone, Serialize)]
pub struct Capture {
    /// Bottle id.
    pub id: String,
    /// The output lines, rendered per [`CaptureMode`].
    pub lines: Vec<String>,
    /// Pass back as `--since` to get only output after these lines (empty when there was
    /// none: pass the previous cursor again).
    pub cursor: String,
}

/// Removes ANSI/VT escape sequences (CSI, OSC, two-byte ESC) and other C0 controls except
/// tab; `\r` ends what a terminal would overwrite, so only the text after the last `\r` stays.
pub fn strip_controls(s: &str) -> String {
    let s = s.rsplit('\r').find(|p| !p.is_empty()).unwrap_or("");
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\x1b' => match it.next() {
                Some('[') => {
                    // CSI: parameters and intermediates, then one final byte 0x40..=0x7e.
                    for c in it.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    // OSC: until BEL or ESC \.
                    while let Some(c) = it.next() {
                        if c == '\x07' || (c == '\x1b' && it.peek() == Some(&'\\')) {
                            if c == '\x1b' {
                                it.next();
                            }
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An engine log timestamp (`2026-12-03T07:40:01.123456789Z`) as `(unix seconds, nanos)`.
pub fn parse_timestamp(ts: &str) -> Option<(i64, u32)> {
    let ts = ts.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    let digits: String = frac.chars().take(9).collect();
    let nanos = format!("{digits:0<9}").parse::<u32>().ok()?;
    Some((
        days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + s,
        nanos,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_stripped_and_carriage_returns_overwrite() {
        assert_eq!(strip_controls("\x1b[1;31mred\x1b[0m text"), "red text");
        assert_eq!(strip_controls("\x1b]0;title\x07shell$ "), "shell$ ");
        assert_eq!(strip_controls("progress 10%\rprogress 99%"), "progress 99%");
        assert_eq!(strip_controls("a\tb\x08c"), "a\tbc");
    }

    #[test]
    fn timestamps_parse_to_unix_time() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_timestamp("2026-12-03T07:40:01.123456789Z"),
            Some((1_796_283_601, 123_456_789))
        );
        assert_eq!(
            parse_timestamp("2024-02-29T00:00:00.5Z"),
            Some((1_709_164_800, 500_000_000))
        );
        assert!(parse_timestamp("yesterday").is_none());
    }
}

/// The bytes of one named key (`Enter`, `C-c`, `Escape`, `Up`, …), tmux-style.
pub fn key_bytes(name: &str) -> Option<Vec<u8>> {
    let fixed: &[u8] = match name {
        "Enter" | "Return" => b"\r",
        "Tab" => b"\t",
        "Escape" | "Esc" => b"\x1b",
        "Space" => b" ",
        "BSpace" | "Backspace" => b"\x7f",
        "Up" => b"\x1b[A",
        "Down" => b"\x1b[B",
        "Right" => b"\x1b[C",
        "Left" => b"\x1b[D",
        "Home" => b"\x1b[H",
        "End" => b"\x1b[F",
        "PageUp" | "PPage" => b"\x1b[5~",
        "PageDown" | "NPage" => b"\x1b[6~",
        "Delete" | "DC" => b"\x1b[3~",
        _ => {
            let c = name.strip_prefix("C-")?;
            let mut ch = c.chars();
            let (Some(c), None) = (ch.next(), ch.next()) else {
                return None;
            };
            let c = c.to_ascii_lowercase();
            return match c {
                'a'..='z' => Some(vec![c as u8 - b'a' + 1]),
                '[' => Some(vec![0x1b]),
                '\\' => Some(vec![0x1c]),
                ']' => Some(vec![0x1d]),
                '@' | ' ' => Some(vec![0]),
                _ => None,
            };
        }
    };
    Some(fixed.to_vec())
}

/// What `bottle send-keys` writes: the text (words joined by spaces), then each named key,
/// then Enter if asked. An unknown key name is an error naming it.
pub fn keys_payload(text: &[String], keys: &[String], enter: bool) -> Result<Vec<u8>> {
    let mut out = text.join(" ").into_bytes();
    for k in keys
        .iter()
        .flat_map(|k| k.split(','))
        .filter(|k| !k.is_empty())
    {
        match key_bytes(k.trim()) {
            Some(b) => out.extend(b),
            None => bail!(
                "unknown key {k:?}; keys are Enter, Tab, Escape, Space, BSpace, Up, Down, Left, Right, Home, End, PageUp, PageDown, Delete and C-<letter>"
            ),
        }
    }
    if enter {
        out.push(b'\r');
    }
    Ok(out)
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn keys_map_like_tmux() {
        assert_eq!(key_bytes("C-c"), Some(vec![3]));
        assert_eq!(key_bytes("Enter"), Some(b"\r".to_vec()));
        assert_eq!(key_bytes("Up"), Some(b"\x1b[A".to_vec()));
        assert_eq!(key_bytes("C-["), Some(vec![0x1b]));
        assert_eq!(key_bytes("Hyper"), None);
        let p = keys_payload(&["echo".into(), "hi".into()], &["C-c,Enter".into()], true).unwrap();
        assert_eq!(p, b"echo hi\x03\r\r");
        let e = keys_payload(&[], &["Enterr".into()], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Enterr"), "{e}");
    }
}
