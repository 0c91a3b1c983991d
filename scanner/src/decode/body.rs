//! Request body decoding: Content-Encoding, JSON, forms, multipart.

use std::io::Read;

use thiserror::Error;

use super::url::{form_pairs, scan_base64_value};
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
) -> Result<(), DecodeError> {
    if depth > limits.max_depth {
        return Err(DecodeError::TooDeep(limits.max_depth));
    }
    let mut data = body.to_vec();
    if let Some(ce) = content_encoding {
        for enc in ce.split(',').rev() {
            let enc = enc.trim();
            if enc.is_empty() || enc.eq_ignore_ascii_case("identity") {
                continue;
            }
            // Scan what we have before decoding, so nothing is skipped if decoding fails.
            out.findings
                .extend(scanner.scan_located(&data, &format!("{prefix}body")));
            data = decode_content_encoding(enc, &data, *budget)?;
            out.decoded_as.push(enc.to_ascii_lowercase());
        }
    }
    *budget = budget.saturating_sub(data.len());
    let loc_body = format!("{prefix}body");
    out.findings.extend(scanner.scan_located(&data, &loc_body));

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
            );
        }
    }

    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    let first = data.iter().copied().find(|b| !b.is_ascii_whitespace());
    if ct.contains("json") || matches!(first, Some(b'{') | Some(b'[') | Some(b'"')) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data) {
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
    )
}
