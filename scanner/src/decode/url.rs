//! URL (path + query) and header scanning.

use base64::Engine as _;

use crate::{Finding, Scanner};

/// Maximum rounds of repeated percent-decoding.
pub(crate) const MAX_URL_ROUNDS: usize = 4;

/// Percent-decodes repeatedly (up to [`MAX_URL_ROUNDS`]) and returns every distinct version,
/// the input first. `plus` also maps `+` to space (query strings, forms).
pub(crate) fn decode_rounds(input: &[u8], plus: bool) -> Vec<Vec<u8>> {
    if memchr::memchr(b'%', input).is_none() && !(plus && memchr::memchr(b'+', input).is_some()) {
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

/// Scans a request target (`/path?query`): the raw string, the path decoded repeatedly, each
/// query parameter's name and value decoded repeatedly (location `query:NAME`), and all values
/// joined (location `query:*`). Offsets are relative to the decoded piece.
pub fn scan_url(scanner: &Scanner, path_and_query: &str) -> Vec<Finding> {
    let raw = path_and_query.as_bytes();
    let mut out = scanner.scan_located(raw, "url");
    let (path, query) = match memchr::memchr(b'?', raw) {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    for v in decode_rounds(path, false).iter().skip(1) {
        out.extend(scanner.scan_located(v, "path"));
    }
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
            }
        }
        out.extend(scanner.scan_located(&joined, "query:*"));
    }
    super::dedupe(&mut out);
    out
}

/// If `v` looks like base64 (standard or URL-safe, >= 16 chars), decodes and scans it.
pub(crate) fn scan_base64_value(scanner: &Scanner, v: &[u8], loc: &str) -> Vec<Finding> {
    let t = v.trim_ascii();
    if t.len() < 16
        || !t
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'='))
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

/// Scans agent-supplied headers: each value (location `header:NAME`), its percent-decoded
/// forms, base64 credentials of `Basic` authorization, and all values joined. Call it before
/// any credential injection, so an injected token never matches itself.
pub fn scan_headers<'a, I>(scanner: &Scanner, headers: I) -> Vec<Finding>
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
        // `Basic <base64>` / bare base64 tokens.
        let starts = |p: &[u8]| value.len() >= p.len() && value[..p.len()].eq_ignore_ascii_case(p);
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
    super::dedupe(&mut out);
    out
}
