//! URL (path + query) and header scanning.

use base64::Engine as _;

use crate::{Finding, Scanner};

/// Maximum rounds of repeated percent-decoding.
pub(crate) const MAX_URL_ROUNDS: usize = 4;

/// True when [`decode_rounds`] would return more than the input itself: it holds a `%`, or a
/// `+` when `plus`.
fn decodable(input: &[u8], plus: bool) -> bool {
    memchr::memchr(b'%', input).is_some() || (plus && memchr::memchr(b'+', input).is_some())
}

/// Percent-decodes repeatedly (up to [`MAX_URL_ROUNDS`]) and returns every distinct version,
/// the input first. `plus` also maps `+` to space (query strings, forms).
pub(crate) fn decode_rounds(input: &[u8], plus: bool) -> Vec<Vec<u8>> {
    if !decodable(input, plus) {
        // Nothing to decode: the input is the only version.
        return vec![input.to_vec()];
    }
    let mut out = vec![input.to_vec()];
    let mut cur = input.to_vec();
    for round in 0..MAX_URL_ROUNDS {
        let mut step = cur.clone();
        if plus && round == 0 {
            for b in step.iter_mut() {
                if *b == b'+' {
                    *b = b' ';
                }
            }
        }
        let next: Vec<u8> = percent_encoding::percent_decode(&step).collect();
        if next == cur {
            break;
        }
        out.push(next.clone());
        cur = next;
    }
    out
}

/// Splits `a=1&b=2;c` into decoded (name, value versions) pairs.
pub(crate) fn form_pairs(query: &[u8]) -> Vec<(String, Vec<Vec<u8>>)> {
    query
        .split(|&b| b == b'&' || b == b';')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = match memchr::memchr(b'=', pair) {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            let name_dec = decode_rounds(name, true).pop().unwrap_or_default();
            let name = String::from_utf8_lossy(&name_dec)
                .chars()
                .take(64)
                .collect();
            (name, decode_rounds(value, true))
        })
        .collect()
}

/// Sets `location` on findings fresh from a scan (which carry none), as [`Finding::at`] does.
fn locate(findings: &mut [Finding], location: &str) {
    for f in findings {
        debug_assert!(f.location.is_none());
        f.location = Some(location.to_string());
    }
}

/// A location built only when a finding needs it (most inputs have none).
struct LazyLoc<F: Fn() -> String> {
    make: F,
    loc: Option<String>,
}

impl<F: Fn() -> String> LazyLoc<F> {
    fn new(make: F) -> Self {
        LazyLoc { make, loc: None }
    }

    /// Locates `findings` at the location, with `(base64)` appended when `base64`.
    fn locate(&mut self, findings: &mut [Finding], base64: bool) {
        if findings.is_empty() {
            return;
        }
        let loc = self.loc.get_or_insert_with(&self.make);
        if base64 {
            locate(findings, &format!("{loc}(base64)"));
        } else {
            locate(findings, loc);
        }
    }
}

/// Scans a request target (`/path?query`): the raw string, the path decoded repeatedly, each
/// query parameter's name and value decoded repeatedly (location `query:NAME`), and all values
/// joined (location `query:*`). Offsets are relative to the decoded piece.
pub fn scan_url(scanner: &Scanner, path_and_query: &str) -> Vec<Finding> {
    let raw = path_and_query.as_bytes();
    let mut out = Vec::new();
    scanner.scan_append(raw, &mut out);
    locate(&mut out, "url");
    let (path, query) = match memchr::memchr(b'?', raw) {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    let mut encoded = Vec::new();
    // Without escapes the path's only version is the raw one, scanned above.
    if decodable(path, false) {
        let start = out.len();
        let versions = decode_rounds(path, false);
        for v in versions.iter().skip(1) {
            scanner.scan_append(v, &mut out);
        }
        locate(&mut out[start..], "path");
        scan_encoded_tokens(scanner, versions.last().unwrap(), "path", &mut encoded);
    } else {
        scan_encoded_tokens(scanner, path, "path", &mut encoded);
    }
    if let Some(q) = query {
        let mut joined = Vec::new();
        for (name, versions) in form_pairs(q) {
            let mut loc = LazyLoc::new(|| format!("query:{name}"));
            let start = out.len();
            scanner.scan_append(name.as_bytes(), &mut out);
            loc.locate(&mut out[start..], false);
            for v in &versions {
                let start = out.len();
                scanner.scan_append(v, &mut out);
                loc.locate(&mut out[start..], false);
                let start = out.len();
                scan_base64_append(scanner, v, &mut out);
                loc.locate(&mut out[start..], true);
            }
            if let Some(last) = versions.last() {
                joined.extend_from_slice(last);
                if last.len() >= MIN_ENCODED_TOKEN {
                    scan_encoded_tokens(scanner, last, &format!("query:{name}"), &mut encoded);
                }
            }
        }
        let start = out.len();
        scanner.scan_append(&joined, &mut out);
        locate(&mut out[start..], "query:*");
    }
    out.append(&mut encoded);
    super::dedupe(&mut out);
    out
}

/// Tokens shorter than this are not tried as hex / base64 (a 16-character encoding holds at
/// most 12 bytes).
const MIN_ENCODED_TOKEN: usize = 16;

/// The characters of an encoded token: base64 (both alphabets, so hex and base32 too).
fn token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'_' | b'-')
}

/// The body decoders for rule patterns, on a (percent-decoded) path or query value: every
/// token (maximal run of base64 characters, so `sha256:<hex>` gives `sha256` and the digest)
/// split at `/` into segments, each of at least [`MIN_ENCODED_TOKEN`] bytes decoded as hex,
/// base64url and base64; standard base64 also from each segment start across later `/`
/// (its alphabet has `/`). Findings are appended with location `LOC(CODEC)`. Decoded bytes
/// that are not text (digests, UUIDs) are checked for known secrets only, so they yield no
/// rule finding.
pub(crate) fn scan_encoded_tokens(scanner: &Scanner, v: &[u8], loc: &str, out: &mut Vec<Finding>) {
    use super::codec::{scan_decoded_append, Codec};
    if v.len() < MIN_ENCODED_TOKEN {
        return;
    }
    let mut buf = Vec::new();
    for token in v.split(|&b| !token_byte(b)) {
        if token.len() < MIN_ENCODED_TOKEN {
            continue;
        }
        let mut seg_start = 0;
        for seg in token.split(|&b| b == b'/') {
            let rest = &token[seg_start..];
            seg_start += seg.len() + 1;
            let mut try_codec = |codec: Codec, c: &[u8]| {
                let start = out.len();
                scan_decoded_append(scanner, codec, c, &mut buf, out);
                if out.len() > start {
                    locate(&mut out[start..], &format!("{loc}({})", codec.name()));
                }
            };
            if seg.len() >= MIN_ENCODED_TOKEN {
                for codec in [Codec::Hex, Codec::Base64Url, Codec::Base64] {
                    try_codec(codec, seg);
                }
            }
            if rest.len() > seg.len() && rest.len() >= MIN_ENCODED_TOKEN {
                try_codec(Codec::Base64, rest);
            }
        }
    }
}

/// Values shorter than this (after trimming) are not tried as base64.
const MIN_BASE64_LEN: usize = 16;
/// Values up to this long have their `=` removed on the stack.
const STACK_BASE64_LEN: usize = 256;
/// Decoded values up to this long are decoded on the stack.
const STACK_DECODED_LEN: usize = 192;

/// The bytes of standard and URL-safe base64, and `=`.
static BASE64_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_' | b'=');
        b += 1;
    }
    t
};

/// If `v` looks like base64 (standard or URL-safe, >= 16 chars), decodes and scans it,
/// appending the findings without location.
pub(crate) fn scan_base64_append(scanner: &Scanner, v: &[u8], out: &mut Vec<Finding>) {
    let t = v.trim_ascii();
    if t.len() < MIN_BASE64_LEN {
        return;
    }
    let mut pad = false;
    for &b in t {
        if !BASE64_BYTE[b as usize] {
            return;
        }
        pad |= b == b'=';
    }
    // `=` is dropped wherever it is.
    if !pad {
        decode_and_scan(scanner, t, out);
    } else if t.len() <= STACK_BASE64_LEN {
        let mut unpadded = [0u8; STACK_BASE64_LEN];
        let mut n = 0;
        for &b in t {
            unpadded[n] = b;
            n += usize::from(b != b'=');
        }
        decode_and_scan(scanner, &unpadded[..n], out);
    } else {
        let unpadded: Vec<u8> = t.iter().copied().filter(|&b| b != b'=').collect();
        decode_and_scan(scanner, &unpadded, out);
    }
}

/// Decodes unpadded standard, else URL-safe, base64 and appends the findings of the decoded
/// bytes; nothing when it is neither. The buffer holds the decoder's length estimate, so
/// `decode_slice` fails exactly when `decode` does.
fn decode_and_scan(scanner: &Scanner, unpadded: &[u8], out: &mut Vec<Finding>) {
    let engines = [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let decode = |buf: &mut [u8]| {
        engines
            .iter()
            .find_map(|e| e.decode_slice(unpadded, buf).ok())
    };
    let estimate = base64::decoded_len_estimate(unpadded.len());
    if estimate <= STACK_DECODED_LEN {
        let mut buf = [0u8; STACK_DECODED_LEN];
        if let Some(len) = decode(&mut buf) {
            scanner.scan_append(&buf[..len], out);
        }
    } else {
        let mut buf = vec![0u8; estimate];
        if let Some(len) = decode(&mut buf) {
            scanner.scan_append(&buf[..len], out);
        }
    }
}

/// If `v` looks like base64 (standard or URL-safe, >= 16 chars), decodes and scans it
/// (location `LOC(base64)`).
pub(crate) fn scan_base64_value(scanner: &Scanner, v: &[u8], loc: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    scan_base64_append(scanner, v, &mut out);
    if !out.is_empty() {
        locate(&mut out, &format!("{loc}(base64)"));
    }
    out
}

/// Header names and values common enough to remember whether they scan clean: a header
/// whose name (value) is one of these and scanned clean when the scanner was built is not
/// scanned again (the scan of the same bytes gives the same result).
const COMMON: [&str; 86] = [
    // Names (as `http` spells them: lower case).
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "anthropic-version",
    "authorization",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "cookie",
    "dnt",
    "expect",
    "forwarded",
    "host",
    "if-modified-since",
    "if-none-match",
    "openai-organization",
    "openai-project",
    "origin",
    "pragma",
    "priority",
    "proxy-authorization",
    "range",
    "referer",
    "sec-fetch-mode",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "via",
    "x-api-key",
    "x-app",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-goog-api-client",
    "x-goog-api-key",
    "x-request-id",
    "x-stainless-arch",
    "x-stainless-async",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
    // Values.
    "application/json",
    "application/json; charset=utf-8",
    "text/event-stream",
    "text/plain",
    "*/*",
    "gzip",
    "gzip, deflate",
    "gzip, deflate, br",
    "br",
    "zstd",
    "deflate",
    "identity",
    "keep-alive",
    "close",
    "no-cache",
    "chunked",
    "trailers",
    "true",
    "false",
    "cors",
    "2023-06-01",
    "en-US,en;q=0.9",
    "application/x-www-form-urlencoded",
    "Linux",
    "MacOS",
    "x64",
    "arm64",
    "js",
    "python",
    "node",
    "0",
    "1",
    "2",
    "600",
];

/// Longest [`COMMON`] entry.
const COMMON_MAX_LEN: usize = 64;

/// Slot of `b` (non-empty) in [`COMMON_SLOTS`]: from the length and three sampled bytes.
const fn common_hash(b: &[u8]) -> usize {
    let n = b.len();
    let a: u32 = 0x1e7f_322b;
    let x = (n as u32).wrapping_mul(0x9E37_79B1)
        ^ (b[0] as u32).wrapping_mul(a)
        ^ (b[n - 1] as u32).wrapping_mul(a >> 7 | 1)
        ^ (b[n / 2] as u32).wrapping_mul(a >> 13 | 1);
    (x.wrapping_mul(0x85EB_CA6B) >> 24) as usize
}

/// `COMMON` index + 1 by [`common_hash`] slot, 0 for none. Collision-free (checked at
/// compile time).
static COMMON_SLOTS: [u8; 256] = {
    assert!(COMMON.len() <= 128, "a u128 bit per entry");
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < COMMON.len() {
        let b = COMMON[i].as_bytes();
        assert!(!b.is_empty() && b.len() <= COMMON_MAX_LEN);
        let h = common_hash(b);
        assert!(t[h] == 0, "COMMON hash collision: change common_hash");
        t[h] = i as u8 + 1;
        i += 1;
    }
    t
};

/// The [`COMMON`] index of `b`, if it is one of them.
#[inline]
fn common_index(b: &[u8]) -> Option<usize> {
    if b.is_empty() || b.len() > COMMON_MAX_LEN {
        return None;
    }
    let i = COMMON_SLOTS[common_hash(b)] as usize;
    (i != 0 && COMMON[i - 1].as_bytes() == b).then(|| i - 1)
}

/// True when `b` is a [`COMMON`] entry whose bit is set in `mask`.
#[inline]
fn known_clean(b: &[u8], mask: u128) -> bool {
    common_index(b).is_some_and(|i| mask >> i & 1 == 1)
}

/// For [`Scanner::common_clean`]: which [`COMMON`] entries yield no finding in
/// [`scan_headers`] as a header name (`[0]`), as a header value (`[1]`).
pub(crate) fn common_clean(scanner: &Scanner) -> [u128; 2] {
    let mut clean = [0u128; 2];
    let mut out = Vec::new();
    for (i, c) in COMMON.iter().enumerate() {
        let c = c.as_bytes();
        scanner.scan_append(c, &mut out);
        if out.is_empty() {
            clean[0] |= 1 << i;
        }
        // As a value: every version (the only one without `%`) and the base64 credential.
        if !decodable(c, false) {
            scan_base64_append(scanner, credential(c), &mut out);
            if out.is_empty() {
                clean[1] |= 1 << i;
            }
        }
        out.clear();
    }
    clean
}

/// The part of a header value tried as base64: after `Basic ` / `Bearer `, else all of it.
fn credential(value: &[u8]) -> &[u8] {
    let starts = |p: &[u8]| value.len() >= p.len() && value[..p.len()].eq_ignore_ascii_case(p);
    if starts(b"basic ") || starts(b"bearer ") {
        &value[value.iter().position(|&b| b == b' ').unwrap_or(0) + 1..]
    } else {
        value
    }
}

/// Scans agent-supplied headers: each value (location `header:NAME`), its percent-decoded
/// forms, base64 credentials of `Basic` authorization, and all values joined. Call it before
/// any credential injection, so an injected token never matches itself.
pub fn scan_headers<'a, I>(scanner: &Scanner, headers: I) -> Vec<Finding>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    let [clean_names, clean_values] = scanner.common_clean();
    let mut out = Vec::new();
    let mut joined = Vec::with_capacity(256);
    for (name, value) in headers {
        joined.extend_from_slice(value);
        joined.push(b'\n');
        let name_clean = known_clean(name.as_bytes(), clean_names);
        let value_clean = known_clean(value, clean_values);
        if name_clean && value_clean {
            continue;
        }
        let mut loc = LazyLoc::new(|| format!("header:{}", name.to_ascii_lowercase()));
        let start = out.len();
        if !name_clean {
            scanner.scan_append(name.as_bytes(), &mut out);
        }
        if value_clean {
            loc.locate(&mut out[start..], false);
            continue;
        }
        if decodable(value, false) {
            for v in decode_rounds(value, false) {
                scanner.scan_append(&v, &mut out);
            }
        } else {
            // The only version is the value itself.
            scanner.scan_append(value, &mut out);
        }
        loc.locate(&mut out[start..], false);
        // `Basic <base64>` / bare base64 tokens.
        let start = out.len();
        scan_base64_append(scanner, credential(value), &mut out);
        loc.locate(&mut out[start..], true);
    }
    let start = out.len();
    scanner.scan_append(&joined, &mut out);
    locate(&mut out[start..], "header:*");
    super::dedupe(&mut out);
    out
}

/// The implementation before the no-finding fast paths, kept as the reference they must match.
#[cfg(test)]
mod reference {
    use base64::Engine as _;

    use super::{decode_rounds, form_pairs};
    use crate::{Finding, Scanner};

    pub(super) fn scan_url(scanner: &Scanner, path_and_query: &str) -> Vec<Finding> {
        let raw = path_and_query.as_bytes();
        let mut out = scanner.scan_located(raw, "url");
        let (path, query) = match memchr::memchr(b'?', raw) {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        };
        let mut encoded = Vec::new();
        let paths = decode_rounds(path, false);
        for v in paths.iter().skip(1) {
            out.extend(scanner.scan_located(v, "path"));
        }
        super::scan_encoded_tokens(scanner, paths.last().unwrap(), "path", &mut encoded);
        if let Some(q) = query {
            let mut joined = Vec::new();
            for (name, versions) in form_pairs(q) {
                let loc = format!("query:{name}");
                out.extend(scanner.scan_located(name.as_bytes(), &loc));
                for v in &versions {
                    out.extend(scanner.scan_located(v, &loc));
                    out.extend(scan_base64_value(scanner, v, &loc));
                }
                if let Some(last) = versions.last() {
                    joined.extend_from_slice(last);
                    super::scan_encoded_tokens(scanner, last, &loc, &mut encoded);
                }
            }
            out.extend(scanner.scan_located(&joined, "query:*"));
        }
        out.extend(encoded);
        crate::decode::dedupe(&mut out);
        out
    }

    pub(super) fn scan_base64_value(scanner: &Scanner, v: &[u8], loc: &str) -> Vec<Finding> {
        let t = v.trim_ascii();
        if t.len() < 16
            || !t.iter().all(|&b| {
                b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'=')
            })
        {
            return Vec::new();
        }
        let unpadded: Vec<u8> = t.iter().copied().filter(|&b| b != b'=').collect();
        let engines = [
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for e in engines {
            if let Ok(d) = e.decode(&unpadded) {
                return scanner.scan_located(&d, &format!("{loc}(base64)"));
            }
        }
        Vec::new()
    }

    pub(super) fn scan_headers<'a, I>(scanner: &Scanner, headers: I) -> Vec<Finding>
    where
        I: IntoIterator<Item = (&'a str, &'a [u8])>,
    {
        let mut out = Vec::new();
        let mut joined = Vec::new();
        for (name, value) in headers {
            let loc = format!("header:{}", name.to_ascii_lowercase());
            out.extend(scanner.scan_located(name.as_bytes(), &loc));
            for v in decode_rounds(value, false) {
                out.extend(scanner.scan_located(&v, &loc));
            }
            let starts =
                |p: &[u8]| value.len() >= p.len() && value[..p.len()].eq_ignore_ascii_case(p);
            let cred = if starts(b"basic ") || starts(b"bearer ") {
                &value[value.iter().position(|&b| b == b' ').unwrap_or(0) + 1..]
            } else {
                value
            };
            out.extend(scan_base64_value(scanner, cred, &loc));
            joined.extend_from_slice(value);
            joined.push(b'\n');
        }
        out.extend(scanner.scan_located(&joined, "header:*"));
        crate::decode::dedupe(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::corpus::{samples, Rng};

    const KNOWN: [(&str, &str); 3] = [
        ("GH_TOKEN", "ghp_Zq8Xv2Lm4Np6Rt0Yw3Ks5Hd7Jf9Gb1Cc2Ee4"),
        ("SHORT_PW", "pw-9x.Q7#k2"),
        (
            "CA_KEY",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7",
        ),
    ];

    /// Rules that fire on some [`COMMON`] names and values.
    const ON_COMMON: &str = r#"
[[rules]]
id = "test-stainless-os"
description = "a common header name"
regex = '''(stainless-os)'''
keywords = ["stainless-os"]

[[rules]]
id = "test-keep-alive"
description = "a common header value"
regex = '''(keep-alive)'''
keywords = ["keep-alive"]
"#;

    /// The default rules and [`KNOWN`]; `on_common` adds rules and known secrets that fire on
    /// some [`COMMON`] entries, raw or base64-decoded.
    fn scanner(on_common: bool) -> Scanner {
        let mut b = Scanner::builder().default_rules(true);
        for (n, v) in KNOWN {
            b = b.known_secret(n, v);
        }
        if on_common {
            let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
            b = b
                .rules_toml("on-common", ON_COMMON)
                .unwrap()
                .known_secret("CT", "text/event-stream")
                .known_secret("B64", b64.decode("application/json").unwrap());
        }
        b.build().unwrap()
    }

    #[test]
    fn common_entries_found_clean_only_when_they_are() {
        let bit = |mask: u128, s: &str| mask >> common_index(s.as_bytes()).unwrap() & 1 == 1;
        let [names, values] = scanner(false).common_clean();
        assert!(COMMON.iter().all(|c| bit(names, c) && bit(values, c)));
        let [names, values] = scanner(true).common_clean();
        assert!(!bit(names, "x-stainless-os") && bit(names, "x-stainless-lang"));
        for v in ["keep-alive", "text/event-stream", "application/json"] {
            assert!(!bit(values, v), "{v}");
        }
        assert!(bit(values, "close") && bit(values, "text/plain"));
        for (i, c) in COMMON.iter().enumerate() {
            assert_eq!(common_index(c.as_bytes()), Some(i));
        }
        for s in ["", "Content-Type", "content-typ", "x-stainless-o", "x"] {
            assert_eq!(common_index(s.as_bytes()), None, "{s}");
        }
    }

    fn pct(b: &[u8], all: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for &c in b {
            if all || !c.is_ascii_alphanumeric() {
                out.extend_from_slice(format!("%{c:02X}").as_bytes());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// A secret-bearing (or not) byte string: corpus credentials, known secrets in their
    /// encodings, auth values, filler, non-UTF-8 bytes.
    fn value(rng: &mut Rng, samples: &[crate::corpus::Sample]) -> Vec<u8> {
        let known = KNOWN[rng.below(KNOWN.len())].1.as_bytes();
        let b64 = base64::engine::general_purpose::STANDARD;
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let s = &samples[rng.below(samples.len())];
        let cred = || -> Vec<u8> { s.positive(&mut Rng::new(7)).trim().as_bytes().to_vec() };
        match rng.below(22) {
            0 => Vec::new(),
            1 => b"application/json".to_vec(),
            2 => COMMON[rng.below(COMMON.len())].as_bytes().to_vec(),
            3 => {
                let n = rng.below(40);
                rng.bytes(n)
            }
            4 => s.positive(rng).trim_end().as_bytes().to_vec(),
            5 => s.negative(rng).trim_end().as_bytes().to_vec(),
            6 => known.to_vec(),
            7 => b64.encode(known).into_bytes(),
            8 => b64url
                .encode([b"x:".as_slice(), known].concat())
                .into_bytes(),
            9 => data_encoding::HEXLOWER.encode(known).into_bytes(),
            10 => pct(known, rng.below(2) == 0),
            11 => pct(&pct(known, false), false),
            12 => known.chunks(3).collect::<Vec<_>>().join(&b"-"[..]).to_vec(),
            13 => format!(
                "Basic {}",
                b64.encode([b"user:".as_slice(), known].concat())
            )
            .into_bytes(),
            14 => format!("Basic {}", b64.encode(format!("u:{}", rng.chars('a', 40)))).into_bytes(),
            15 => [b"Bearer ".as_slice(), known].concat(),
            16 => format!("bearer {}", rng.chars('a', 40)).into_bytes(),
            17 => [b"BASIC ".as_slice(), &b64.encode(cred()).into_bytes()].concat(),
            18 => b64.encode(cred()).into_bytes(),
            19 => pct(&cred(), false),
            20 => {
                let mut v = cred();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, rng.bytes(3));
                v
            }
            _ => {
                let n = rng.below(60);
                rng.chars('b', n).into_bytes()
            }
        }
    }

    fn name(rng: &mut Rng, samples: &[crate::corpus::Sample]) -> String {
        match rng.below(10) {
            0 => KNOWN[rng.below(KNOWN.len())].1.to_string(),
            1 => samples[rng.below(samples.len())]
                .positive(rng)
                .trim()
                .to_string(),
            2 => {
                let n = rng.below(30);
                format!("X-{}", rng.chars('a', n))
            }
            3 => String::new(),
            4 | 5 => COMMON[rng.below(COMMON.len())].to_string(),
            _ => [
                "content-type",
                "Authorization",
                "x-api-key",
                "content-length",
                "via",
                "Cookie",
                "user-agent",
            ][rng.below(7)]
            .to_string(),
        }
    }

    /// The fast paths change nothing: same findings (ids, locations, offsets, previews,
    /// encodings, order) as the reference implementation on random header sets and URLs.
    #[test]
    fn same_findings_as_reference() {
        let scanners = [scanner(false), scanner(true)];
        let samples = samples();
        let mut rng = Rng::new(42);
        let (mut found, mut in_b64, mut known_hits, mut in_names) = (0, 0, 0, 0);
        let mut on_common = 0;
        for round in 0..6000 {
            let s = &scanners[round % 2];
            let n = rng.below(6);
            let mut headers: Vec<(String, Vec<u8>)> = (0..n)
                .map(|_| (name(&mut rng, &samples), value(&mut rng, &samples)))
                .collect();
            if n > 0 && rng.below(4) == 0 {
                // A secret split across two consecutive headers.
                let v = [
                    KNOWN[0].1.as_bytes(),
                    &samples[4].positive(&mut rng).into_bytes(),
                ][rng.below(2)]
                .to_vec();
                let cut = 1 + rng.below(v.len() - 1);
                let i = rng.below(n);
                headers[i].1 = v[..cut].to_vec();
                headers.insert(i + 1, ("x-rest".into(), v[cut..].to_vec()));
            }
            let pairs = || headers.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
            let got = scan_headers(s, pairs());
            let want = reference::scan_headers(s, pairs());
            assert_eq!(got, want, "round {round}: {headers:?}");
            found += got.len();
            in_b64 += got
                .iter()
                .filter(|f| {
                    f.location
                        .as_deref()
                        .is_some_and(|l| l.ends_with("(base64)"))
                })
                .count();
            known_hits += got.iter().filter(|f| f.known_secret.is_some()).count();
            on_common += got
                .iter()
                .filter(|f| {
                    f.rule_id.starts_with("test-")
                        || matches!(f.known_secret.as_deref(), Some("CT" | "B64"))
                })
                .count();
            in_names += got
                .iter()
                .filter(|f| {
                    headers.iter().any(|(k, _)| {
                        f.location.as_deref() == Some(&format!("header:{}", k.to_ascii_lowercase()))
                            && k.len() > 20
                    })
                })
                .count();

            // A URL from the same material: path segments and query pairs.
            let seg = |rng: &mut Rng| {
                let v = value(rng, &samples);
                String::from_utf8_lossy(&pct(&v, rng.below(3) == 0)).into_owned()
            };
            let mut url = format!("/v1/{}", seg(&mut rng));
            for i in 0..rng.below(4) {
                url.push(if i == 0 {
                    '?'
                } else {
                    ['&', ';'][rng.below(2)]
                });
                let k = if rng.below(3) == 0 {
                    seg(&mut rng)
                } else {
                    format!("k{i}")
                };
                url.push_str(&format!("{k}={}", seg(&mut rng)));
            }
            if rng.below(10) == 0 {
                url.push_str("?x+y=a+b");
            }
            let got = scan_url(s, &url);
            assert_eq!(got, reference::scan_url(s, &url), "round {round}: {url}");
            found += got.len();
        }
        assert!(found > 1000, "{found}");
        assert!(in_b64 > 50, "{in_b64}");
        assert!(known_hits > 200, "{known_hits}");
        assert!(in_names > 20, "{in_names}");
        assert!(on_common > 200, "{on_common}");
        // The request dlpprofile measures: nothing found.
        let s = &scanners[0];
        let h: [(&str, &[u8]); 4] = [
            ("content-type", b"application/json"),
            ("x-api-key", b"placeholder"),
            ("content-length", b"1234"),
            ("via", b"1.1 bottle-sidecar"),
        ];
        assert!(scan_headers(s, h).is_empty());
        assert!(scan_url(s, "/v1/messages").is_empty());
    }

    /// A `ghp_` token hex / base64 / base64url-encoded in a path segment or query value is
    /// found by the rule set (no known secret involved); ordinary URLs with digests, UUIDs and
    /// long ids give nothing.
    #[test]
    fn encoded_rule_tokens_in_path_and_query() {
        let s = Scanner::builder().default_rules(true).build().unwrap();
        let mut rng = Rng::new(17);
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut slashed = 0;
        for _ in 0..40 {
            let tok = format!("ghp_{}", rng.chars('a', 36));
            assert!(scan_url(&s, &format!("/x/{tok}"))
                .iter()
                .any(|f| f.rule_id == "github-pat"));
            let hex = data_encoding::HEXLOWER.encode(tok.as_bytes());
            // `???` encodes to `Pz8/`: the base64 spans path segments.
            let std = b64.encode(format!("???token={tok}\n"));
            slashed += usize::from(std.contains('/'));
            let cases = [
                (format!("/x/{hex}"), "path(hex)"),
                (format!("/x/{}", hex.to_uppercase()), "path(hex)"),
                (format!("/x/{std}"), "path(base64)"),
                (format!("/x/{std}/tail.json"), "path(base64)"),
                (format!("/x/{}", b64url.encode(&tok)), "path(base64"),
                (format!("/x/sha1:{hex}/y"), "path(hex)"),
                (format!("/api?q={hex}"), "query:q(hex)"),
                (format!("/api?a=1&q=v1:{hex}"), "query:q(hex)"),
                (format!("/api?q={}", b64url.encode(&tok)), "query:q(base64"),
            ];
            for (url, loc) in cases {
                let raw = Scanner::scan(&s, url.as_bytes());
                assert!(raw.is_empty(), "{url}: raw scan finds it already");
                let f = scan_url(&s, &url);
                assert!(
                    f.iter().any(|f| f.rule_id == "github-pat"
                        && f.location.as_deref().is_some_and(|l| l.starts_with(loc))),
                    "{url}: {f:?}"
                );
            }
        }
        assert!(
            slashed > 5,
            "base64 with '/' across path segments exercised: {slashed}"
        );
        let digest = data_encoding::HEXLOWER.encode(&rng.bytes(32));
        let clean = [
            format!("/v2/library/python/blobs/sha256:{digest}"),
            format!("/v2/library/python/manifests/sha256:{digest}?ns=docker.io"),
            "/repos/octo/cat/git/commits/6dcb09b5b57875f334f61aebed695e2e4193db5e".to_string(),
            "/api/v1/items/123e4567-e89b-12d3-a456-426614174000/versions/7".to_string(),
            format!("/objects/{}/{}", &digest[..2], &digest[2..]),
            format!("/download?checksum={digest}&id=5f3c9a7b2e1d4c6a8b0f9e7d"),
            "/simple/requests/requests-2.32.3-py3-none-any.whl#sha256=70761cfe03c773ceb22aa2f671b4757976145175cdfca038c02654d061d6dcc6".to_string(),
            "/npm/@types%2Fnode/-/node-20.11.30.tgz".to_string(),
            "/v1/messages?beta=true".to_string(),
            "/storage/v1/b/my-bucket/o/path%2Fto%2Fobject.tar.gz?alt=media&generation=1712345678901234".to_string(),
            "/aGVsbG8gd29ybGQgdGhpcyBpcyBmaW5l/dGV4dA".to_string(),
        ];
        for url in clean {
            let f = scan_url(&s, &url);
            assert!(f.is_empty(), "{url}: {f:?}");
        }
    }

    /// `scan_base64_value` (also used by the body decoders) against the reference, on values
    /// around the stack-buffer length, with `=` anywhere.
    #[test]
    fn base64_value_same_as_reference() {
        let s = scanner(false);
        let mut rng = Rng::new(3);
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut found = 0;
        for _ in 0..2000 {
            let n = rng.below(260);
            let mut plain = rng.chars('a', n).into_bytes();
            let at = rng.below(plain.len() + 1);
            plain.splice(at..at, KNOWN[rng.below(3)].1.bytes());
            let mut v = b64.encode(&plain).into_bytes();
            match rng.below(5) {
                0 => v.insert(rng.below(v.len() + 1), b'='),
                1 => v.truncate(rng.below(v.len() + 1)),
                2 => v.extend(std::iter::repeat_n(b'=', rng.below(300))),
                3 => v = vec![b'='; rng.below(300)],
                _ => {}
            }
            let got = scan_base64_value(&s, &v, "p");
            assert_eq!(got, reference::scan_base64_value(&s, &v, "p"));
            found += got.len();
        }
        assert!(found > 500, "{found}");
    }
}
