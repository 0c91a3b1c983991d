//! Makes agent output safe to show on the user's terminal.
//!
//! An agent's output is untrusted: a raw `ESC ] 52 ; c ; … BEL` writes the user's clipboard,
//! `ESC ] 0 ; …` retitles the window, other escape sequences move the cursor, rewrite what is
//! already on screen or (on some terminals) answer back into the input. `bottle run` (streamed
//! output) and `bottle logs` therefore pass every byte through a [`TermFilter`]:
//!
//! - printable text (ASCII and valid UTF-8, including multibyte characters split across chunks)
//!   is passed through unchanged, as are `\n` and `\t`, and `\r` directly before `\n`;
//! - every other C0 control (ESC, BEL, a lone `\r`, backspace, …) and DEL become visible text
//!   `\x1b`, `\x07`, `\r`, `\x08`, `\x7f`;
//! - C1 controls written as UTF-8 (U+0080 – U+009F, e.g. U+009B, the one-character CSI) become
//!   `\u{9b}`;
//! - bytes that are not valid UTF-8 (a raw `0x9b` is CSI on 8-bit terminals) become `\x9b`.
//!
//! Colour sequences (SGR) are escaped too: telling a safe SGR from a harmful sequence needs a
//! parser, and a visible `\x1b[31m` costs nothing. `bottle start`'s interactive terminal is not
//! filtered: there the user talks to the agent's TTY directly.

/// A streaming filter: feed chunks with [`TermFilter::push`], then call [`TermFilter::finish`].
///
/// State carried between chunks: an incomplete UTF-8 sequence (at most 3 bytes) and a `\r`
/// whose next byte is not known yet.
#[derive(Debug, Default)]
pub struct TermFilter {
    pending: Vec<u8>,
}

impl TermFilter {
    /// A filter with nothing pending.
    pub fn new() -> TermFilter {
        TermFilter::default()
    }

    /// Filters one chunk; returns the bytes safe to write. Bytes that may belong to a sequence
    /// continued by the next chunk are held back.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match b {
                b'\n' | b'\t' | 0x20..=0x7e => {
                    out.push(b);
                    i += 1;
                }
                b'\r' => match input.get(i + 1) {
                    Some(b'\n') => {
                        out.extend_from_slice(b"\r\n");
                        i += 2;
                    }
                    Some(_) => {
                        out.extend_from_slice(b"\\r");
                        i += 1;
                    }
                    None => {
                        self.pending.push(b'\r');
                        i += 1;
                    }
                },
                0x00..=0x1f | 0x7f => {
                    push_hex(&mut out, b);
                    i += 1;
                }
                _ => {
                    let need = utf8_len(b);
                    if need == 0 {
                        push_hex(&mut out, b);
                        i += 1;
                        continue;
                    }
                    let end = (i + need).min(input.len());
                    match std::str::from_utf8(&input[i..end]) {
                        Ok(s) if end - i == need => {
                            let c = s.chars().next().unwrap_or('\u{fffd}');
                            if ('\u{80}'..='\u{9f}').contains(&c) {
                                out.extend_from_slice(format!("\\u{{{:x}}}", c as u32).as_bytes());
                            } else {
                                out.extend_from_slice(s.as_bytes());
                            }
                            i = end;
                        }
                        Err(e) if e.error_len().is_none() && end == input.len() => {
                            // A valid prefix cut by the chunk boundary: wait for the rest.
                            self.pending.extend_from_slice(&input[i..]);
                            i = input.len();
                        }
                        _ => {
                            push_hex(&mut out, b);
                            i += 1;
                        }
                    }
                }
            }
        }
        out
    }

    /// Flushes whatever is held back (an incomplete sequence at the end of the stream is shown
    /// escaped).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for b in std::mem::take(&mut self.pending) {
            if b == b'\r' {
                out.extend_from_slice(b"\\r");
            } else {
                push_hex(&mut out, b);
            }
        }
        out
    }
}

/// Escapes a whole string (a file name, a manifest value) for display on a terminal with the
/// same rules as [`TermFilter`].
pub fn escape_str(s: &str) -> String {
    let mut f = TermFilter::new();
    let mut out = f.push(s.as_bytes());
    out.extend(f.finish());
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes one line of a message (a path, a name): like [`escape_str`], and `\n` and `\t` are
/// escaped too.
pub fn escape_line(s: &str) -> String {
    escape_str(s).replace('\n', "\\n").replace('\t', "\\t")
}

fn push_hex(out: &mut Vec<u8>, b: u8) {
    out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
}

/// The length of the UTF-8 sequence a lead byte starts (0: not a lead byte).
fn utf8_len(b: u8) -> usize {
    match b {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the filter over `chunks` and returns everything it wrote.
    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut f = TermFilter::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(f.push(c));
        }
        out.extend(f.finish());
        out
    }

    #[test]
    fn table() {
        // (name, input chunks, expected output)
        type Case<'a> = (&'a str, &'a [&'a [u8]], &'a [u8]);
        let cases: &[Case] = &[
            ("plain text", &[b"hello world\n"], b"hello world\n"),
            ("tab kept", &[b"a\tb\n"], b"a\tb\n"),
            ("crlf kept", &[b"a\r\nb"], b"a\r\nb"),
            ("lone cr escaped", &[b"100%\rdone"], b"100%\\rdone"),
            ("crlf split", &[b"a\r", b"\nb"], b"a\r\nb"),
            ("cr at end", &[b"a\r"], b"a\\r"),
            (
                "OSC 52 with BEL",
                &[b"\x1b]52;c;aGVsbG8=\x07after"],
                b"\\x1b]52;c;aGVsbG8=\\x07after",
            ),
            (
                "OSC 52 with ST",
                &[b"\x1b]52;c;aGVsbG8=\x1b\\after"],
                b"\\x1b]52;c;aGVsbG8=\\x1b\\after",
            ),
            ("OSC 0 title", &[b"\x1b]0;pwned\x07"], b"\\x1b]0;pwned\\x07"),
            ("CSI clear screen", &[b"\x1b[2J\x1b[H"], b"\\x1b[2J\\x1b[H"),
            ("SGR colour escaped", &[b"\x1b[31mred"], b"\\x1b[31mred"),
            (
                "escape split across chunks",
                &[b"x\x1b", b"]52;c;QQ==", b"\x07y"],
                b"x\\x1b]52;c;QQ==\\x07y",
            ),
            ("C1 CSI as UTF-8", &["\u{9b}2J".as_bytes()], b"\\u{9b}2J"),
            ("C1 CSI split", &[b"\xc2", b"\x9b2J"], b"\\u{9b}2J"),
            ("raw 0x9b byte", &[b"\x9b2J"], b"\\x9b2J"),
            ("backspace and DEL", &[b"a\x08\x7f"], b"a\\x08\\x7f"),
            ("NUL", &[b"\x00"], b"\\x00"),
            (
                "UTF-8 kept",
                &["héllo ✓ 🦀\n".as_bytes()],
                "héllo ✓ 🦀\n".as_bytes(),
            ),
            (
                "UTF-8 split in every place",
                &[b"\xf0", b"\x9f", b"\xa6", b"\x80!"],
                "🦀!".as_bytes(),
            ),
            ("3-byte split", &[b"\xe2\x9c", b"\x93"], "✓".as_bytes()),
            ("truncated UTF-8 at end", &[b"ok\xe2\x9c"], b"ok\\xe2\\x9c"),
            ("invalid continuation", &[b"\xe2(x"], b"\\xe2(x"),
            ("overlong / bad lead", &[b"\xc0\xaf"], b"\\xc0\\xaf"),
        ];
        for (name, chunks, want) in cases {
            let got = run(chunks);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(want),
                "case {name}"
            );
        }
    }

    #[test]
    fn output_never_contains_controls() {
        // Every byte value, one per chunk and all at once: nothing but \n, \t, \r\n survives.
        let all: Vec<u8> = (0..=255u8).collect();
        for out in [run(&[&all]), run(&all.chunks(1).collect::<Vec<_>>())] {
            let s = String::from_utf8(out).expect("the output is UTF-8");
            assert!(!s
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r'));
        }
    }

    #[test]
    fn escape_line_escapes_newlines() {
        assert_eq!(escape_line("a\nb\x1b"), "a\\nb\\x1b");
        assert_eq!(escape_str("a\nb"), "a\nb");
    }
}
