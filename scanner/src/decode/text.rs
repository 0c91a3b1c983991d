//! Text and file scanning with the body decoders: what `bottle scan` runs on a file, so a
//! file, a request body and a pushed blob are judged alike.

use super::body::{scan_body_at, DecodeLimits};
use super::url::decode_rounds;
use crate::{Finding, Scanner};

/// Escapes a span needs before it is percent-decoded and rescanned.
const MIN_PERCENT_ESCAPES: usize = 2;
/// Longest span percent-decoded (longer spans are decoded up to this length).
const MAX_SPAN: usize = 64 << 10;
/// Longest line unescaped by [`unescaped_lines`].
const MAX_UNESCAPE_LINE: usize = 256 << 10;
/// Rounds of backslash unescaping.
const UNESCAPE_ROUNDS: usize = 3;

/// Scans text the way the proxy scans a body's bytes, plus text-only decoders: the raw scan;
/// every `%XX`-dense span (a run of bytes without whitespace, quotes, brackets or backticks
/// holding at least two `%XX` escapes — URL-encoded text in code, Markdown links, JSON)
/// percent-decoded repeatedly and rescanned (location `(percent)`); every line with a doubled
/// backslash escape (`\\n`, `\\"`, text escaped twice, e.g. a PEM key inside a JSON string
/// inside a JSON string) unescaped up to three times and rescanned (location `(unescaped)`).
/// Decoded findings have the offset and length of their span or line; a decoded finding of a
/// rule / known secret already found raw inside that span is dropped. Raw findings have no
/// location.
pub fn scan_text(scanner: &Scanner, data: &[u8]) -> Vec<Finding> {
    let mut out = scanner.scan(data);
    let raw = out.len();
    percent_spans(scanner, data, raw, "(percent)", &mut out);
    unescaped_lines(scanner, data, raw, &mut out);
    out
}

/// Scans a file's contents with the same decoders the proxy runs on a request body
/// ([`super::scan_body`] without a `Content-Type`: sniffed JSON strings, forms, multipart,
/// gzip, base64 values, percent-dense spans) plus [`scan_text`]'s unescaping of doubly
/// escaped lines. Findings are sorted by offset. Raw findings have no location and offsets in
/// `data`; findings in JSON strings have the JSON path as location and the offset of the
/// string in `data` plus the offset inside the unescaped string; findings of a rule / known
/// secret that a raw finding at the same place already reports are dropped. On a decoding
/// error (e.g. a sniffed multipart body with a broken base64 part) it returns [`scan_text`].
pub fn scan_file(scanner: &Scanner, data: &[u8]) -> Vec<Finding> {
    let limits = DecodeLimits::default();
    let Ok(scan) = scan_body_at(scanner, data, &limits) else {
        return scan_text(scanner, data);
    };
    let mut out: Vec<Finding> = scan
        .findings
        .into_iter()
        .map(|mut f| {
            f.location = match f.location.as_deref() {
                Some("body") => None,
                Some(l) => Some(l.strip_prefix("body").unwrap_or(l).to_string()),
                None => None,
            };
            f
        })
        .collect();
    // Raw findings first, so the decoded duplicates of a raw finding are the ones dropped.
    out.sort_by_key(|f| (f.location.is_some(), f.offset));
    let raw = out.iter().filter(|f| f.location.is_none()).count();
    unescaped_lines(scanner, data, raw, &mut out);
    let mut kept: Vec<Finding> = Vec::with_capacity(out.len());
    for f in out {
        let dup = kept.iter().any(|k| {
            k.rule_id == f.rule_id
                && k.known_secret == f.known_secret
                && (k.location.is_none() || k.location == f.location)
                && k.offset < f.offset + f.len.max(1)
                && f.offset < k.offset + k.len.max(1)
        });
        if !dup {
            kept.push(f);
        }
    }
    kept.sort_by_key(|f| f.offset);
    kept
}

/// True when `out[..raw]` (raw findings) has one of `f`'s rule / known secret inside
/// `[start, end)`.
fn found_raw(out: &[Finding], raw: usize, f: &Finding, start: usize, end: usize) -> bool {
    out[..raw].iter().any(|r| {
        r.rule_id == f.rule_id
            && r.known_secret == f.known_secret
            && r.offset < end
            && start < r.offset + r.len
    })
}

/// Appends `found` (from a decoded span `[start, end)` of the raw input) to `out` with that
/// span as offset / length and `location`, unless `out[..raw]` already has it.
fn push_decoded(
    out: &mut Vec<Finding>,
    raw: usize,
    found: Vec<Finding>,
    start: usize,
    end: usize,
    location: &str,
) {
    for mut f in found {
        if found_raw(out, raw, &f, start, end)
            || out[raw..].iter().any(|o| {
                o.rule_id == f.rule_id && o.known_secret == f.known_secret && o.offset == start
            })
        {
            continue;
        }
        f.offset = start;
        f.len = end - start;
        f.location = Some(location.to_string());
        out.push(f);
    }
}

/// Bytes that end a percent-encoded span.
fn span_end(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b'"' | b'\'' | b'`' | b'<' | b'>' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'\\'
        )
}

/// The percent-dense span pass of [`scan_text`] (also run by `scan_body` on a body's bytes):
/// appends findings located `location`. `out[..raw]` are the raw findings, which decoded
/// duplicates yield to.
pub(crate) fn percent_spans(
    scanner: &Scanner,
    data: &[u8],
    raw: usize,
    location: &str,
    out: &mut Vec<Finding>,
) {
    let mut next = 0;
    for p in memchr::memchr_iter(b'%', data) {
        if p < next || !is_escape(data, p) {
            continue;
        }
        let start = data[..p]
            .iter()
            .rposition(|&b| span_end(b))
            .map_or(0, |i| i + 1);
        let end = data[p..]
            .iter()
            .position(|&b| span_end(b))
            .map_or(data.len(), |i| p + i);
        next = end;
        let span = &data[start..end.min(start + MAX_SPAN)];
        let escapes = (0..span.len()).filter(|&i| is_escape(span, i)).count();
        if escapes < MIN_PERCENT_ESCAPES {
            continue;
        }
        let mut found = Vec::new();
        for v in decode_rounds(span, false).iter().skip(1) {
            scanner.scan_append(v, &mut found);
        }
        push_decoded(out, raw, found, start, end, location);
    }
}

/// True when `data[i..]` starts with `%` and two hex digits.
fn is_escape(data: &[u8], i: usize) -> bool {
    data[i] == b'%'
        && data.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
        && data.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
}

/// The doubled-escape pass of [`scan_text`]: lines holding `\\` followed by `n`, `r`, `t`,
/// `"`, `/` or `u` are unescaped (JSON / C escapes) up to [`UNESCAPE_ROUNDS`] times, and each
/// round rescanned (location `(unescaped)`).
fn unescaped_lines(scanner: &Scanner, data: &[u8], raw: usize, out: &mut Vec<Finding>) {
    let finder = memchr::memmem::Finder::new(b"\\\\");
    let mut next = 0;
    for p in finder.find_iter(data) {
        if p < next
            || !matches!(
                data.get(p + 2),
                Some(b'n' | b'r' | b't' | b'"' | b'/' | b'u')
            )
        {
            continue;
        }
        let start = memchr::memrchr(b'\n', &data[..p]).map_or(0, |i| i + 1);
        let end = memchr::memchr(b'\n', &data[p..]).map_or(data.len(), |i| p + i);
        next = end;
        let mut cur = data[start..end.min(start + MAX_UNESCAPE_LINE)].to_vec();
        let mut found = Vec::new();
        for _ in 0..UNESCAPE_ROUNDS {
            let Some(u) = unescape(&cur) else { break };
            scanner.scan_append(&u, &mut found);
            cur = u;
        }
        push_decoded(out, raw, found, start, end, "(unescaped)");
    }
}

/// One round of backslash unescaping (`\n \r \t \" \\ \/ \' \uXXXX` for ASCII); other escapes
/// are kept. `None` when there is nothing to unescape.
fn unescape(s: &[u8]) -> Option<Vec<u8>> {
    memchr::memchr(b'\\', s)?;
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    let mut changed = false;
    while i < s.len() {
        if s[i] != b'\\' || i + 1 == s.len() {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let (b, n) = match s[i + 1] {
            b'n' => (b'\n', 2),
            b'r' => (b'\r', 2),
            b't' => (b'\t', 2),
            c @ (b'"' | b'\\' | b'/' | b'\'') => (c, 2),
            b'u' => match s
                .get(i + 2..i + 6)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(c) if c < 0x80 => (c, 6),
                _ => (b'\\', 1),
            },
            _ => (b'\\', 1),
        };
        changed |= n > 1;
        out.push(b);
        i += n;
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::Rng;

    fn scanner() -> Scanner {
        Scanner::builder().default_rules(true).build().unwrap()
    }

    fn pct_all(s: &str) -> String {
        s.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    fn pct_reserved(s: &str) -> String {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    /// URL-encoded credentials inside Python, shell, YAML, Markdown and JSON are found after
    /// percent-decoding; the raw text alone does not show them.
    #[test]
    fn percent_encoded_text_in_files() {
        let s = scanner();
        let mut rng = Rng::new(4);
        for _ in 0..6 {
            let slack = format!(
                "https://hooks.slack.com/services/T{}/B{}/{}",
                rng.chars('U', 8),
                rng.chars('U', 8),
                rng.chars('a', 24)
            );
            let pg = format!("postgres://app:{}@db.internal:5432/app", rng.chars('a', 20));
            let aws = format!("aws_secret_access_key = {}", rng.chars('b', 40));
            let api = format!("API_SECRET={}", rng.chars('a', 32));
            let cases = [
                ("slack-webhook-url", slack.clone()),
                ("database-url-postgres", pg.clone()),
                ("aws-secret-access-key", aws.clone()),
                ("generic-env-secret", api.clone()),
            ];
            for (rule, secret) in cases {
                for enc in [pct_all(&secret), pct_reserved(&secret)] {
                    let files = [
                        format!("import requests\nURL = \"{enc}\"\nrequests.get(URL)\n"),
                        format!("#!/bin/sh\ncurl -d '{enc}' https://x.test\n"),
                        format!("config:\n  hook: {enc}\n"),
                        format!("See [the hook]({enc}) for details.\n"),
                        format!("{{\"a\": 1, \"url\": \"{enc}\"}}\n"),
                    ];
                    for f in files {
                        assert!(
                            !s.scan(f.as_bytes()).iter().any(|x| x.rule_id == rule),
                            "raw scan already finds {rule}: {f}"
                        );
                        let got = scan_text(&s, f.as_bytes());
                        let hit = got.iter().find(|x| x.rule_id == rule);
                        let hit = hit.unwrap_or_else(|| panic!("{rule} missed in {f}: {got:?}"));
                        assert_eq!(hit.location.as_deref(), Some("(percent)"));
                        assert!(f[hit.offset..hit.offset + hit.len].contains(&enc), "{f}");
                        let got = scan_file(&s, f.as_bytes());
                        assert!(got.iter().any(|x| x.rule_id == rule), "scan_file: {f}");
                    }
                }
            }
        }
        // printf formats and ordinary URLs: nothing.
        for clean in [
            "printf(\"%02x%02x%02x\\n\", a, b, c);\n",
            "see https://example.com/a%20b%20c?q=%E2%9C%93\n",
            "x = '%(name)s %(value)d' % d\n",
        ] {
            assert!(scan_text(&s, clean.as_bytes()).is_empty(), "{clean}");
        }
    }

    /// Random text full of `%`, backslashes, quotes and non-UTF-8 bytes never panics, and
    /// every decoded finding lies inside the input.
    #[test]
    fn random_text_does_not_panic() {
        let s = scanner();
        let mut rng = Rng::new(31);
        let parts: [&[u8]; 10] = [
            b"%", b"%4", b"%41", b"\\\\n", b"\\u0067", b"\"", b" ", b"\n", b"\xff", b"ghp_",
        ];
        for _ in 0..2000 {
            let mut t = Vec::new();
            for _ in 0..rng.below(60) {
                t.extend_from_slice(parts[rng.below(parts.len())]);
                let n = rng.below(5);
                t.extend(rng.chars('a', n).bytes());
            }
            for f in scan_text(&s, &t).into_iter().chain(scan_file(&s, &t)) {
                assert!(f.offset + f.len <= t.len(), "{f:?}");
            }
        }
    }

    /// A PEM key inside a JSON string inside a JSON string (`\\n` newlines) is found.
    #[test]
    fn doubly_escaped_pem_in_json() {
        let s = scanner();
        let mut rng = Rng::new(8);
        let body = format!("{}\n{}\n", rng.chars('b', 64), rng.chars('b', 64));
        for kind in ["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY"] {
            let pem = format!("-----BEGIN {kind}-----\n{body}-----END {kind}-----\n");
            let inner = serde_json::to_string(&serde_json::json!({ "private_key": pem })).unwrap();
            let outer = serde_json::to_string(&serde_json::json!({ "config": inner })).unwrap();
            assert!(outer.contains("\\\\n"), "{outer}");
            let found = scan_file(&s, outer.as_bytes());
            assert!(
                found.iter().any(|f| f.rule_id.starts_with("private-key")),
                "{kind}: {outer}: {found:?}"
            );
            // Three levels, in a file that is not JSON itself.
            let third = format!(
                "CONFIG='{}'\n",
                serde_json::to_string(&serde_json::json!({ "v": outer })).unwrap()
            );
            let found = scan_text(&s, third.as_bytes());
            assert!(
                found.iter().any(|f| f.rule_id.starts_with("private-key")),
                "{kind}: {third}: {found:?}"
            );
        }
        assert_eq!(unescape(br"a\\nb\u0041\q"), Some(b"a\\nbA\\q".to_vec()));
        assert_eq!(unescape(b"plain"), None);
    }

    /// `scan_file` reports a token in a JSON file once, at its place in the file.
    #[test]
    fn scan_file_dedupes_and_places_json_findings() {
        let s = scanner();
        let tok = format!("ghp_{}", Rng::new(1).chars('a', 36));
        let doc = format!("{{\n  \"a\": \"x\",\n  \"token\": \"{tok}\"\n}}\n");
        let found = scan_file(&s, doc.as_bytes());
        let gh: Vec<&Finding> = found.iter().filter(|f| f.rule_id == "github-pat").collect();
        assert_eq!(gh.len(), 1, "{found:?}");
        assert_eq!(&doc[gh[0].offset..gh[0].offset + gh[0].len], tok);
        // Escaped in JSON (`\u0067hp_…`): found at the JSON path, placed at the string.
        let esc = format!("{{\"k\": [\"\\u0067{}\"]}}", &tok[1..]);
        let found = scan_file(&s, esc.as_bytes());
        let f = found
            .iter()
            .find(|f| f.rule_id == "github-pat")
            .expect("escaped token");
        assert_eq!(f.location.as_deref(), Some("$.k[0]"));
        assert_eq!(f.offset, esc.find("\\u0067").unwrap());
    }
}
