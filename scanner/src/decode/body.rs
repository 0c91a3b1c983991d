//! Request body decoding: Content-Encoding, JSON, forms, multipart.

use std::io::Read;

use thiserror::Error;

use super::json;
use super::url::{form_pairs, scan_base64_value};
use crate::known;
use crate::scanner::KeywordHit;
use crate::{Finding, Scanner};

/// Limits for body decoding.
#[derive(Debug, Clone)]
pub struct DecodeLimits {
    /// Maximum decompressed size of a body (and of all multipart parts together), in bytes.
    pub max_decoded: usize,
    /// Maximum nesting of multipart bodies and encodings.
    pub max_depth: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_decoded: 16 << 20,
            max_depth: 4,
        }
    }
}

/// A body could not be decoded. The proxy should treat it as a block (fail closed).
#[derive(Debug, Error)]
pub enum DecodeError {
    /// Decompression exceeded [`DecodeLimits::max_decoded`].
    #[error("{encoding} body decompresses to more than {limit} bytes (DecodeLimits::max_decoded); raise the per-route body cap or send the body uncompressed")]
    TooLarge {
        /// The encoding being decoded.
        encoding: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not valid for its declared encoding.
    #[error("body is not valid {encoding}: {message}")]
    BadEncoding {
        /// The encoding.
        encoding: String,
        /// The decoder's error.
        message: String,
    },
    /// An unsupported `Content-Encoding`.
    #[error(
        "unsupported Content-Encoding `{0}`; supported: gzip, x-gzip, deflate, br, zstd, identity"
    )]
    UnknownEncoding(String),
    /// Too much nesting.
    #[error("body nests encodings/multipart deeper than {0} levels (DecodeLimits::max_depth)")]
    TooDeep(usize),
}

/// The result of [`scan_body`].
#[derive(Debug, Default)]
pub struct BodyScan {
    /// Findings with `location` set.
    pub findings: Vec<Finding>,
    /// The structures the body was decoded as (e.g. `gzip`, `json`, `multipart`).
    pub decoded_as: Vec<String>,
}

fn read_capped(mut r: impl Read, encoding: &str, limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    (&mut r)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::BadEncoding {
            encoding: encoding.to_string(),
            message: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge {
            encoding: encoding.to_string(),
            limit,
        });
    }
    Ok(out)
}

/// Decodes one `Content-Encoding` token.
pub fn decode_content_encoding(
    encoding: &str,
    data: &[u8],
    limit: usize,
) -> Result<Vec<u8>, DecodeError> {
    match encoding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(data.to_vec()),
        "gzip" | "x-gzip" => read_capped(flate2::read::MultiGzDecoder::new(data), "gzip", limit),
        "deflate" => {
            read_capped(flate2::read::ZlibDecoder::new(data), "deflate", limit).or_else(|e| match e
            {
                DecodeError::TooLarge { .. } => Err(e),
                _ => read_capped(flate2::read::DeflateDecoder::new(data), "deflate", limit),
            })
        }
        "br" => read_capped(
            brotli_decompressor::Decompressor::new(data, 4096),
            "br",
            limit,
        ),
        "zstd" => {
            let dec = ruzstd::decoding::StreamingDecoder::new(data).map_err(|e| {
                DecodeError::BadEncoding {
                    encoding: "zstd".into(),
                    message: e.to_string(),
                }
            })?;
            read_capped(dec, "zstd", limit)
        }
        other => Err(DecodeError::UnknownEncoding(other.to_string())),
    }
}

/// Scans a request body: decodes `Content-Encoding` (a comma list, applied in reverse) with a
/// size cap, always scans the raw decoded bytes (location `body`), then — by content type *or*
/// by sniffing, so a lying `Content-Type` cannot skip anything — JSON keys and string values
/// after unescaping (location = JSON path; base64-looking strings are decoded too), form fields
/// (`form:NAME`) and multipart parts (`multipart:NAME`, with base64/quoted-printable transfer
/// encodings decoded and nested bodies handled recursively). A body that looks gzip-compressed
/// without saying so is also decompressed. Errors mean "could not inspect": block.
pub fn scan_body(
    scanner: &Scanner,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
    limits: &DecodeLimits,
) -> Result<BodyScan, DecodeError> {
    let mut out = BodyScan::default();
    let mut budget = limits.max_decoded;
    scan_inner(
        scanner,
        content_type,
        content_encoding,
        body,
        limits,
        0,
        "",
        &mut budget,
        &mut out,
        false,
    )?;
    super::dedupe(&mut out.findings);
    Ok(out)
}

/// [`scan_body`] without content type or encoding, for file contents: findings in top-level
/// JSON strings get the string's offset in `body` added (their offsets are then positions in
/// `body`, exact up to the first escape before the secret in its string).
pub(crate) fn scan_body_at(
    scanner: &Scanner,
    body: &[u8],
    limits: &DecodeLimits,
) -> Result<BodyScan, DecodeError> {
    let mut out = BodyScan::default();
    let mut budget = limits.max_decoded;
    scan_inner(
        scanner,
        None,
        None,
        body,
        limits,
        0,
        "",
        &mut budget,
        &mut out,
        true,
    )?;
    super::dedupe(&mut out.findings);
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn scan_inner(
    scanner: &Scanner,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
    limits: &DecodeLimits,
    depth: usize,
    prefix: &str,
    budget: &mut usize,
    out: &mut BodyScan,
    abs: bool,
) -> Result<(), DecodeError> {
    if depth > limits.max_depth {
        return Err(DecodeError::TooDeep(limits.max_depth));
    }
    let mut data = std::borrow::Cow::Borrowed(body);
    if let Some(ce) = content_encoding {
        for enc in ce.split(',').rev() {
            let enc = enc.trim();
            if enc.is_empty() || enc.eq_ignore_ascii_case("identity") {
                continue;
            }
            // Scan what we have before decoding, so nothing is skipped if decoding fails.
            out.findings
                .extend(scanner.scan_located(&data, &format!("{prefix}body")));
            data = decode_content_encoding(enc, &data, *budget)?.into();
            out.decoded_as.push(enc.to_ascii_lowercase());
        }
    }
    *budget = budget.saturating_sub(data.len());
    let loc_body = format!("{prefix}body");
    let (raw_findings, keyword_spans, view_decoded) = scanner.scan_with_keyword_spans(&data);
    // Spans of known-secret findings in the raw bytes.
    let known_spans: Vec<(usize, usize)> = raw_findings
        .iter()
        .filter(|f| f.known_secret.is_some())
        .map(|f| (f.offset, f.offset + f.len))
        .collect();
    out.findings
        .extend(raw_findings.into_iter().map(|f| f.at(loc_body.clone())));
    // URL-encoded text (`%XX`-dense spans), as `bottle scan` does for files.
    if memchr::memchr(b'%', &data).is_some() {
        let raw = out.findings.len();
        super::text::percent_spans(
            scanner,
            &data,
            raw,
            &format!("{loc_body}(percent)"),
            &mut out.findings,
        );
    }

    // Undeclared gzip.
    if data.starts_with(&[0x1f, 0x8b]) {
        if let Ok(d) = decode_content_encoding("gzip", &data, *budget) {
            out.decoded_as.push("gzip-sniffed".into());
            return scan_inner(
                scanner,
                None,
                None,
                &d,
                limits,
                depth + 1,
                &format!("{prefix}gzip:"),
                budget,
                out,
                false,
            );
        }
    }

    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    let first = data.iter().copied().find(|b| !b.is_ascii_whitespace());
    if ct.contains("json") || matches!(first, Some(b'{') | Some(b'[') | Some(b'"')) {
        if let Some(strs) = json::strings(&data, prefix) {
            out.decoded_as.push("json".into());
            scan_json_strings(
                scanner,
                &data,
                &strs,
                &keyword_spans,
                &known_spans,
                view_decoded,
                abs,
                &mut out.findings,
            );
        } else if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data) {
            out.decoded_as.push("json".into());
            let mut path = format!("{prefix}$");
            walk_json(scanner, &v, &mut path, &mut out.findings);
        }
    }
    if let Some(boundary) = multipart_boundary(&ct, content_type, &data) {
        out.decoded_as.push("multipart".into());
        for part in split_multipart(&data, &boundary) {
            scan_part(scanner, &part, limits, depth, prefix, budget, out)?;
        }
    }
    if ct.contains("x-www-form-urlencoded") || looks_like_form(&data) {
        out.decoded_as.push("form".into());
        for (name, versions) in form_pairs(&data) {
            let loc = format!("{prefix}form:{name}");
            for v in versions.iter().skip(1) {
                out.findings.extend(scanner.scan_located(v, &loc));
            }
            if let Some(v) = versions.first() {
                out.findings.extend(scan_base64_value(scanner, v, &loc));
            }
        }
    }
    Ok(())
}

fn looks_like_form(data: &[u8]) -> bool {
    !data.is_empty()
        && data.len() < (4 << 20)
        && memchr::memchr(b'=', data).is_some()
        && !data
            .iter()
            .any(|&b| b.is_ascii_whitespace() || b == b'{' || b == b'<' || b == b'"')
}

/// Scans the JSON strings of `data` (keys and values, after unescaping; values that look like
/// base64 also decoded) with their JSON paths as locations — the same findings as scanning every
/// string on its own ([`walk_json`]), without re-scanning strings that cannot yield any:
/// * rule findings need a keyword hit in the string. The unescaped string is the raw bytes
///   with each escape replaced by the byte(s) it stands for, so a keyword occurrence that does
///   not contain an escape-produced byte is a keyword hit of the raw body scan inside the
///   string's byte range (`keyword_spans`). Strings with neither such a hit nor an escape
///   producing a keyword byte are not scanned for rules.
/// * known secrets: a string without escapes has the same normalised view as its bytes in the
///   raw body, so it can only hold a known secret that the raw scan found overlapping it
///   (`known_spans`); strings with escapes are always scanned for known secrets.
#[allow(clippy::too_many_arguments)]
fn scan_json_strings(
    scanner: &Scanner,
    data: &[u8],
    strs: &[json::JsonStr],
    keyword_spans: &[KeywordHit],
    known_spans: &[(usize, usize)],
    view_decoded: bool,
    abs: bool,
    out: &mut Vec<Finding>,
) {
    let non_ascii_keywords = (0x80..=0xffu8).any(|b| scanner.is_keyword_byte(b));
    let mut escapes = Vec::new();
    let mut hits = Vec::new();
    for s in strs {
        let raw = &data[s.start..s.end];
        let first = keyword_spans.partition_point(|&(ks, _, _)| ks < s.start);
        let inside = keyword_spans[first..]
            .iter()
            .take_while(|&&(ks, _, _)| ks < s.end)
            .filter(|&&(_, ke, _)| ke <= s.end);
        let mut need_rules = inside.clone().next().is_some();
        // An escape decoding to a keyword byte may form a keyword the raw bytes do not hold:
        // then the string's own keyword search is needed.
        let mut own_search = false;
        let raw_known = known_spans
            .iter()
            .any(|&(ks, ke)| ks < s.end && s.start < ke);
        let mut need_known = scanner.has_known() && raw_known;
        // With known secrets, an escaped string is always unescaped (see below), and what its
        // escapes do is read off the unescaping; without, a cheap pass decides.
        let unescape_anyway = s.escaped && scanner.has_known();
        if s.escaped && !unescape_anyway {
            let e = escape_effects(scanner, raw, non_ascii_keywords);
            need_rules |= e.keyword_byte;
            own_search = e.keyword_byte;
        }
        let b64 = !s.key && maybe_base64(raw);
        if !(need_rules || need_known || b64 || unescape_anyway) {
            continue;
        }
        let first_new = out.len();
        let decoded;
        escapes.clear();
        let bytes: &[u8] = if s.escaped {
            match json::unescape_mapped(raw, &mut escapes) {
                Some(d) => {
                    decoded = d;
                    &decoded
                }
                // serde_json would have refused the whole document.
                None => continue,
            }
        } else {
            raw
        };
        if unescape_anyway {
            let e = escapes_effects(scanner, raw, bytes, &escapes);
            need_rules |= e.keyword_byte;
            own_search = e.keyword_byte;
            // The raw view over the string's bytes is the unescaped string's view only when
            // escapes were decoded in it and the unescaped string has no escapes of its own.
            need_known = need_known || !(view_decoded && e.view_safe) || known::has_escapes(bytes);
        }
        if need_rules && own_search {
            out.extend(scanner.scan_located(bytes, &s.path));
        } else if need_rules {
            // No escape yields a keyword byte, so the string's keyword hits are exactly the
            // raw hits inside it that overlap no escape, shifted to unescaped offsets.
            map_hits(inside, s.start, &escapes, &mut hits);
            out.extend(scanner.scan_located_with_hits(bytes, &hits, &s.path, need_known));
        } else if need_known {
            out.extend(scanner.scan_known_located(bytes, &s.path));
        }
        if b64 {
            out.extend(scan_base64_value(scanner, bytes, &s.path));
        }
        if abs {
            for f in &mut out[first_new..] {
                f.offset += s.start;
            }
        }
    }
}

/// Maps keyword hits in a raw JSON string content starting at `base` (sorted by start) to
/// offsets in its unescaped form (`escapes` from [`json::unescape_mapped`]), dropping hits
/// that overlap an escape; the result replaces `out`.
fn map_hits<'h>(
    raw_hits: impl Iterator<Item = &'h KeywordHit>,
    base: usize,
    escapes: &[(usize, usize, usize)],
    out: &mut Vec<KeywordHit>,
) {
    out.clear();
    let mut k = 0;
    for &(ks, ke, ki) in raw_hits {
        let (a, b) = (ks - base, ke - base);
        while k < escapes.len() && escapes[k].1 <= a {
            k += 1;
        }
        if k < escapes.len() && escapes[k].0 < b {
            continue;
        }
        let shift = match k {
            0 => 0,
            _ => escapes[k - 1].1 - escapes[k - 1].2,
        };
        out.push((a - shift, b - shift, ki));
    }
}

/// Cheap pre-check for [`scan_base64_value`] on a raw JSON string: at least 16 bytes, all of
/// them base64 characters, whitespace or backslashes (escapes).
fn maybe_base64(raw: &[u8]) -> bool {
    raw.len() >= 16
        && raw.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'+' | b'/' | b'-' | b'_' | b'=' | b'\\')
                || b.is_ascii_whitespace()
        })
}

/// What the escapes of a raw JSON string content do.
struct EscapeEffects {
    /// Some escape decodes to a byte that occurs in a keyword (non-ASCII `\u` escapes count
    /// when any keyword has a non-ASCII byte).
    keyword_byte: bool,
    /// Every escape is one the known-secret view decodes to the same byte as JSON does
    /// (`\"`, `\\`, `\/`, `\n`, `\r`, `\t`, `\u` below 0x80 — not `\b`, `\f` or non-ASCII
    /// `\u`), so with escape decoding on, the raw view over the string's bytes is the view of
    /// the unescaped string, provided that one has no escapes of its own.
    view_safe: bool,
}

/// [`escape_effects`] read off an unescaping: `raw` the string content, `decoded` its
/// unescaped form and `escapes` from [`json::unescape_mapped`]. Exact per decoded byte (a
/// non-ASCII escape counts only if one of its UTF-8 bytes occurs in a keyword).
fn escapes_effects(
    scanner: &Scanner,
    raw: &[u8],
    decoded: &[u8],
    escapes: &[(usize, usize, usize)],
) -> EscapeEffects {
    let mut e = EscapeEffects {
        keyword_byte: false,
        view_safe: true,
    };
    let (mut prev_raw, mut prev_out) = (0, 0);
    for &(rs, re, oe) in escapes {
        let os = prev_out + (rs - prev_raw);
        let out = &decoded[os..oe];
        if matches!(raw[rs + 1], b'b' | b'f') || out.iter().any(|&b| b >= 0x80) {
            e.view_safe = false;
        }
        if out.iter().any(|&b| scanner.is_keyword_byte(b)) {
            e.keyword_byte = true;
        }
        (prev_raw, prev_out) = (re, oe);
    }
    e
}

fn escape_effects(scanner: &Scanner, raw: &[u8], non_ascii_keywords: bool) -> EscapeEffects {
    let mut e = EscapeEffects {
        keyword_byte: false,
        view_safe: true,
    };
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'\\', &raw[i..]) {
        let j = i + p;
        let (byte, len) = match raw.get(j + 1) {
            Some(b'u') => {
                let cp = raw
                    .get(j + 2..j + 6)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u32::from_str_radix(h, 16).ok());
                match cp {
                    Some(c) if c < 0x80 => (Some(c as u8), 6),
                    _ => {
                        e.view_safe = false;
                        (None, 6)
                    }
                }
            }
            Some(b'b') => {
                e.view_safe = false;
                (Some(0x08), 2)
            }
            Some(b'f') => {
                e.view_safe = false;
                (Some(0x0c), 2)
            }
            Some(b'n') => (Some(b'\n'), 2),
            Some(b'r') => (Some(b'\r'), 2),
            Some(b't') => (Some(b'\t'), 2),
            Some(&c) => (Some(c), 2),
            None => {
                e.keyword_byte = true;
                e.view_safe = false;
                return e;
            }
        };
        match byte {
            Some(b) if scanner.is_keyword_byte(b) => e.keyword_byte = true,
            None if non_ascii_keywords => e.keyword_byte = true,
            _ => {}
        }
        i = (j + len).min(raw.len());
    }
    e
}

fn walk_json(scanner: &Scanner, v: &serde_json::Value, path: &mut String, out: &mut Vec<Finding>) {
    use serde_json::Value;
    match v {
        Value::String(s) => {
            out.extend(scanner.scan_located(s.as_bytes(), path));
            out.extend(scan_base64_value(scanner, s.as_bytes(), path));
        }
        Value::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk_json(scanner, item, path, out);
                path.truncate(len);
            }
        }
        Value::Object(m) => {
            for (k, item) in m {
                let len = path.len();
                path.push('.');
                path.extend(k.chars().take(64));
                out.extend(scanner.scan_located(k.as_bytes(), path));
                walk_json(scanner, item, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// The multipart boundary from the content type, or sniffed from a first line `--X`.
fn multipart_boundary(ct_lower: &str, ct: Option<&str>, data: &[u8]) -> Option<String> {
    if ct_lower.contains("multipart/") {
        if let Some(ct) = ct {
            for param in ct.split(';').skip(1) {
                let (k, v) = param.split_once('=')?;
                if k.trim().eq_ignore_ascii_case("boundary") {
                    let b = v.trim().trim_matches('"');
                    if !b.is_empty() && b.len() <= 200 {
                        return Some(b.to_string());
                    }
                }
            }
        }
    }
    // Sniff: body starts with "--boundary\r\n".
    let rest = data.strip_prefix(b"--")?;
    let eol = memchr::memchr(b'\n', &rest[..rest.len().min(202)])?;
    let b = rest[..eol].strip_suffix(b"\r").unwrap_or(&rest[..eol]);
    if b.is_empty() || b.iter().any(|c| c.is_ascii_whitespace()) {
        return None;
    }
    Some(String::from_utf8_lossy(b).into_owned())
}

struct Part {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn split_multipart(data: &[u8], boundary: &str) -> Vec<Part> {
    let delim = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delim.as_bytes());
    let positions: Vec<usize> = finder.find_iter(data).collect();
    let mut parts = Vec::new();
    for w in positions.windows(2) {
        let mut seg = &data[w[0] + delim.len()..w[1]];
        seg = seg
            .strip_prefix(b"\r\n")
            .or_else(|| seg.strip_prefix(b"\n"))
            .unwrap_or(seg);
        seg = seg
            .strip_suffix(b"\r\n")
            .or_else(|| seg.strip_suffix(b"\n"))
            .unwrap_or(seg);
        let (head, body) = match memchr::memmem::find(seg, b"\r\n\r\n") {
            Some(i) => (&seg[..i], &seg[i + 4..]),
            None => match memchr::memmem::find(seg, b"\n\n") {
                Some(i) => (&seg[..i], &seg[i + 2..]),
                None => (&b""[..], seg),
            },
        };
        let headers = String::from_utf8_lossy(head)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
            })
            .collect();
        parts.push(Part {
            headers,
            body: body.to_vec(),
        });
    }
    parts
}

fn part_name(headers: &[(String, String)]) -> String {
    let cd = headers
        .iter()
        .find(|(k, _)| k == "content-disposition")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    for p in cd.split(';') {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case("name") {
                return v.trim().trim_matches('"').chars().take(64).collect();
            }
        }
    }
    "?".into()
}

fn scan_part(
    scanner: &Scanner,
    part: &Part,
    limits: &DecodeLimits,
    depth: usize,
    prefix: &str,
    budget: &mut usize,
    out: &mut BodyScan,
) -> Result<(), DecodeError> {
    let name = part_name(&part.headers);
    let header = |n: &str| {
        part.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    let loc = format!("{prefix}multipart:{name}/");
    // Header values of the part (e.g. a filename) are scanned too.
    for (k, v) in &part.headers {
        out.findings
            .extend(scanner.scan_located(v.as_bytes(), &format!("{loc}header:{k}")));
    }
    let mut body = part.body.clone();
    match header("content-transfer-encoding")
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        Some("base64") => {
            out.findings.extend(scanner.scan_located(&body, &loc));
            let clean: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
                .collect();
            body =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD_NO_PAD, &clean)
                    .map_err(|e| DecodeError::BadEncoding {
                    encoding: format!("base64 multipart part `{name}`"),
                    message: e.to_string(),
                })?;
        }
        Some("quoted-printable") => {
            out.findings.extend(scanner.scan_located(&body, &loc));
            body = quoted_printable::decode(&body, quoted_printable::ParseMode::Robust).map_err(
                |e| DecodeError::BadEncoding {
                    encoding: format!("quoted-printable multipart part `{name}`"),
                    message: e.to_string(),
                },
            )?;
        }
        _ => {}
    }
    if body.len() > *budget {
        return Err(DecodeError::TooLarge {
            encoding: "multipart".into(),
            limit: limits.max_decoded,
        });
    }
    let ct = header("content-type");
    let ce = header("content-encoding");
    scan_inner(
        scanner,
        ct.as_deref(),
        ce.as_deref(),
        &body,
        limits,
        depth + 1,
        &loc,
        budget,
        out,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{planted_corpus, Rng};

    fn scanner() -> Scanner {
        let mut rng = Rng::new(5);
        Scanner::builder()
            .default_rules(true)
            .known_secret("GH", format!("ghp_{}", rng.chars('a', 36)))
            .known_secret("ANT", format!("sk-ant-oat01-{}AA", rng.chars('w', 93)))
            .build()
            .unwrap()
    }

    /// The previous `scan_body` JSON path: raw scan, then every string of the serde_json value
    /// scanned on its own.
    fn old_json_scan(s: &Scanner, data: &[u8]) -> Vec<Finding> {
        let mut out = s.scan_located(data, "body");
        let raw = out.len();
        crate::decode::text::percent_spans(s, data, raw, "body(percent)", &mut out);
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
            let mut path = "$".to_string();
            walk_json(s, &v, &mut path, &mut out);
        }
        super::super::dedupe(&mut out);
        out
    }

    fn key(f: &Finding) -> String {
        format!("{f:?}")
    }

    /// A random JSON value whose strings hold planted credentials, known secrets (raw,
    /// base64, percent-encoded, split by escaped newlines) and all kinds of escapes.
    fn random_value(
        rng: &mut Rng,
        lines: &[&str],
        secrets: &[String],
        depth: usize,
    ) -> serde_json::Value {
        use serde_json::Value;
        let text = |rng: &mut Rng| -> String {
            let mut t = String::new();
            for _ in 0..rng.below(4) {
                match rng.below(12) {
                    0 => t.push_str(&secrets[rng.below(secrets.len())]),
                    1 => {
                        let s = &secrets[rng.below(secrets.len())];
                        let cut = rng.below(s.len());
                        t.push_str(&s[..cut]);
                        t.push(['\n', '\t', '\r', ' '][rng.below(4)]);
                        t.push_str(&s[cut..]);
                    }
                    2 => t.push_str(&base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        &secrets[rng.below(secrets.len())],
                    )),
                    3 => t.push_str(
                        &secrets[rng.below(secrets.len())]
                            .bytes()
                            .map(|b| format!("%{b:02X}"))
                            .collect::<String>(),
                    ),
                    4 => t.push_str("\\u0041 \\/ %4 \\x41 \u{e9}\u{1F600}\u{8}\u{c}\"'\\"),
                    5 => {
                        // A credential line with an escaped byte at a random place (in or
                        // next to a keyword: its raw hits must be dropped or shifted).
                        let l = lines[rng.below(lines.len())];
                        let mut cut = rng.below(l.len() + 1);
                        while !l.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        t.push_str(&l[..cut]);
                        t.push(['\n', '"', '\\', '\t', '\u{1}', '\u{e9}', '/'][rng.below(7)]);
                        t.push_str(&l[cut..]);
                    }
                    6 => {
                        // A JSON document holding a secret (first byte as `\u00XX`), as
                        // text: escaped twice in the body (`\\u0067hp_...`).
                        let s = &secrets[rng.below(secrets.len())];
                        t.push_str(&format!(
                            "{{\"token\": \"\\u{:04x}{}\"}}",
                            s.as_bytes()[0],
                            &s[1..]
                        ));
                    }
                    _ => t.push_str(lines[rng.below(lines.len())]),
                }
                t.push(['\n', ' ', '"', '\\', '/'][rng.below(5)]);
            }
            t
        };
        if depth == 0 || rng.below(3) == 0 {
            return Value::String(text(rng));
        }
        if rng.below(2) == 0 {
            Value::Array(
                (0..rng.below(4))
                    .map(|_| random_value(rng, lines, secrets, depth - 1))
                    .collect(),
            )
        } else {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.below(4) {
                let k = if rng.below(4) == 0 {
                    text(rng)
                } else {
                    rng.chars('l', 5)
                };
                m.insert(k, random_value(rng, lines, secrets, depth - 1));
            }
            Value::Object(m)
        }
    }

    /// The tokenizer-based JSON scan finds exactly what scanning every string on its own
    /// found, with the same locations and offsets.
    #[test]
    fn json_scan_matches_per_string_scan() {
        let s = scanner();
        let (corpus, _) = planted_corpus(3, 300);
        let lines: Vec<&str> = corpus.lines().collect();
        let mut rng = Rng::new(9);
        let secrets = vec![
            format!("ghp_{}", Rng::new(5).chars('a', 36)),
            {
                let mut r = Rng::new(5);
                let _ = r.chars('a', 36);
                format!("sk-ant-oat01-{}AA", r.chars('w', 93))
            },
            format!("ghp_{}", rng.chars('a', 36)),
            format!(
                "xoxb-{}-{}-{}",
                rng.chars('d', 11),
                rng.chars('d', 12),
                rng.chars('a', 24)
            ),
        ];
        let mut total = 0;
        for round in 0..300 {
            let v = random_value(&mut rng, &lines, &secrets, 4);
            let mut docs = vec![serde_json::to_vec(&v).unwrap()];
            // `\/`, `\uXXXX` for ASCII, and pretty printing
            let escaped = String::from_utf8(docs[0].clone())
                .unwrap()
                .replace('/', "\\/")
                .replace("AA", "\\u0041A");
            docs.push(escaped.into_bytes());
            docs.push(serde_json::to_vec_pretty(&v).unwrap());
            for d in docs {
                let mut old: Vec<String> = old_json_scan(&s, &d).iter().map(key).collect();
                let r =
                    scan_body(&s, Some("application/json"), None, &d, &Default::default()).unwrap();
                let mut new: Vec<String> = r.findings.iter().map(key).collect();
                old.sort();
                new.sort();
                assert_eq!(old, new, "round {round}: {}", String::from_utf8_lossy(&d));
                total += old.len();
            }
        }
        assert!(total > 500, "only {total} findings");
    }

    /// Raw keyword hits map to the unescaped string: shifted past escapes, dropped when they
    /// overlap one (`\token` is a tab and `oken`).
    #[test]
    fn keyword_hits_map_past_escapes() {
        let raw = br#"a\"token\token\u0041token\ud83d\ude00token"#;
        let mut esc = Vec::new();
        let u = json::unescape_mapped(raw, &mut esc).unwrap();
        assert_eq!(u, "a\"token\token\u{41}token\u{1F600}token".as_bytes());
        let finder = memchr::memmem::Finder::new(b"token");
        let raw_hits: Vec<KeywordHit> =
            finder.find_iter(raw).map(|i| (i + 10, i + 15, 7)).collect();
        assert_eq!(raw_hits.len(), 4, "incl. the one in \\token");
        let mut got = Vec::new();
        map_hits(raw_hits.iter(), 10, &esc, &mut got);
        let want: Vec<KeywordHit> = finder.find_iter(&u).map(|i| (i, i + 5, 7)).collect();
        assert_eq!(got, want);
    }

    /// Tokenizer vs serde_json: same strings (as paths and unescaped values) on random JSON,
    /// and `unescape` equals serde_json's decoding.
    #[test]
    fn tokenizer_matches_serde_json() {
        fn collect(v: &serde_json::Value, path: &mut String, out: &mut Vec<(String, Vec<u8>)>) {
            use serde_json::Value;
            match v {
                Value::String(s) => out.push((path.clone(), s.as_bytes().to_vec())),
                Value::Array(a) => {
                    for (i, x) in a.iter().enumerate() {
                        let n = path.len();
                        path.push_str(&format!("[{i}]"));
                        collect(x, path, out);
                        path.truncate(n);
                    }
                }
                Value::Object(m) => {
                    for (k, x) in m {
                        let n = path.len();
                        path.push('.');
                        path.extend(k.chars().take(64));
                        out.push((path.clone(), k.as_bytes().to_vec()));
                        collect(x, path, out);
                        path.truncate(n);
                    }
                }
                _ => {}
            }
        }
        let mut rng = Rng::new(21);
        let lines = ["a \"q\" \\ / \u{1}\u{7f} \u{e9}\u{10000}", "x\ny", "k=v&z"];
        let secrets = vec!["s3cr3t-value-123456".to_string()];
        for _ in 0..500 {
            let mut v = random_value(&mut rng, &lines, &secrets, 5);
            if rng.below(3) == 0 {
                v = serde_json::json!({"n": [1, -2.5e3, true, false, null, {}, []], "v": v});
            }
            let doc = if rng.below(2) == 0 {
                serde_json::to_vec(&v).unwrap()
            } else {
                serde_json::to_vec_pretty(&v).unwrap()
            };
            let mut want = Vec::new();
            collect(&v, &mut "$".to_string(), &mut want);
            want.sort();
            let mut got: Vec<(String, Vec<u8>)> = json::strings(&doc, "")
                .unwrap()
                .into_iter()
                .map(|s| {
                    let raw = &doc[s.start..s.end];
                    let val = if s.escaped {
                        json::unescape(raw).unwrap()
                    } else {
                        raw.to_vec()
                    };
                    (s.path, val)
                })
                .collect();
            got.sort();
            assert_eq!(got, want, "{}", String::from_utf8_lossy(&doc));
        }
        // escapes, surrogates, bad input
        for raw in [
            &br#"a\u00e9\ud83d\ude00\n\t\"\\\/\b\f"#[..],
            br#"\ud83d"#,
            br#"\ude00x"#,
            br#"\q"#,
            br#"\u12"#,
        ] {
            let mut q = b"\"".to_vec();
            q.extend_from_slice(raw);
            q.push(b'"');
            let serde = serde_json::from_slice::<String>(&q)
                .ok()
                .map(String::into_bytes);
            assert_eq!(
                json::unescape(raw),
                serde,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        for bad in [
            &b"{"[..],
            b"[1,]x",
            b"{\"a\" 1}",
            b"\"abc",
            b"tru",
            b"[1 2]",
            b"{\"a\":1,}",
        ] {
            if serde_json::from_slice::<serde_json::Value>(bad).is_err() {
                // Either refused or (lenient) accepted; never a panic.
                let _ = json::strings(bad, "");
            }
        }
    }
}
