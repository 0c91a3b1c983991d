//! Known secrets: the bottle's own real secrets, found raw and in common encodings.
//!
//! Design: every secret is expanded at build time into *needles* — the raw value, lowercase hex,
//! the stable inner substrings of its standard and URL-safe base64 encodings at each of the 3
//! byte alignments, and of its base32 encoding at each of the 5 alignments. Separator bytes
//! (`-`, `.`, space, tab, CR, LF) are stripped from every needle. At scan time the input is turned
//! into a *normalised view* with the same separators stripped (and, only when the input contains
//! `%XX`, `\uXXXX`, `\xXX` or `\/` escapes, with those escapes decoded as well); one
//! ASCII-case-insensitive Aho-Corasick automaton over all needles runs on that view. Case-exact
//! encodings (raw, base64) are verified byte for byte; hex and base32 match in either case.
//! Percent-encoding (full or partial), JSON `\u00XX` / `\/` escaping and inserted separators are
//! therefore all covered by the same needles.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::Engine as _;

use crate::error::RuleError;

/// Minimum length of a known secret, in bytes.
pub const MIN_KNOWN_SECRET_LEN: usize = 8;
/// Minimum length of a needle after stripping separators.
const MIN_NEEDLE_LEN: usize = 8;
/// View-to-input checkpoints are taken every this many input bytes (fast path).
const CHECKPOINT: usize = 1024;

/// Separator bytes that may be inserted into a secret and are ignored when matching.
#[inline]
pub(crate) fn is_separator(b: u8) -> bool {
    matches!(b, b'-' | b'.' | b' ' | b'\t' | b'\r' | b'\n')
}

static SEP_TABLE: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'-' as usize] = 1;
    t[b'.' as usize] = 1;
    t[b' ' as usize] = 1;
    t[b'\t' as usize] = 1;
    t[b'\r' as usize] = 1;
    t[b'\n' as usize] = 1;
    t
};

fn strip(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .copied()
        .filter(|&b| !is_separator(b))
        .collect()
}

#[derive(Debug, Clone)]
struct Needle {
    secret: usize,
    encoding: &'static str,
    /// Needle with separators stripped (what is searched in the view).
    stripped: Vec<u8>,
    /// True when the case must match exactly (raw, base64).
    exact_case: bool,
}

/// A match of a known secret in the input.
#[derive(Debug, Clone)]
pub(crate) struct KnownHit {
    pub secret: usize,
    pub start: usize,
    pub end: usize,
    pub encoding: String,
}

/// The compiled set of known secrets.
#[derive(Debug, Clone)]
pub(crate) struct KnownSet {
    pub names: Vec<String>,
    needles: Vec<Needle>,
    ac: Option<AhoCorasick>,
    /// Longest raw secret in bytes (drives the streaming overlap).
    pub max_len: usize,
}

/// The stable inner substring of a base-N encoding of `secret` when it starts `k` bytes into the
/// encoded stream: the output characters whose bits come only from `secret`.
fn inner(
    secret: &[u8],
    k: usize,
    bits_per_char: usize,
    encode: &dyn Fn(&[u8]) -> String,
) -> Vec<u8> {
    let mut buf = vec![0u8; k];
    buf.extend_from_slice(secret);
    let enc = encode(&buf);
    let start = (8 * k).div_ceil(bits_per_char);
    let end = (8 * (k + secret.len())) / bits_per_char;
    if end <= start || end > enc.len() {
        return Vec::new();
    }
    enc.as_bytes()[start..end].to_vec()
}

impl KnownSet {
    /// Builds the needle automaton for `(name, value)` pairs.
    pub fn new(secrets: &[(String, Vec<u8>)]) -> Result<Self, RuleError> {
        let mut needles: Vec<Needle> = Vec::new();
        let mut names = Vec::new();
        let mut max_len = 0;
        for (idx, (name, value)) in secrets.iter().enumerate() {
            if value.len() < MIN_KNOWN_SECRET_LEN {
                return Err(RuleError::KnownSecret {
                    name: name.clone(),
                    message: format!(
                        "value is {} bytes; known secrets must be at least {MIN_KNOWN_SECRET_LEN} bytes to be matched without false positives",
                        value.len()
                    ),
                });
            }
            if strip(value).len() < MIN_NEEDLE_LEN {
                return Err(RuleError::KnownSecret {
                    name: name.clone(),
                    message: format!(
                        "value has fewer than {MIN_NEEDLE_LEN} bytes besides separators (-, ., whitespace)"
                    ),
                });
            }
            names.push(name.clone());
            max_len = max_len.max(value.len());
            let mut add = |encoding: &'static str, full: Vec<u8>, exact_case: bool| {
                let stripped = strip(&full);
                if stripped.len() < MIN_NEEDLE_LEN {
                    return;
                }
                if needles
                    .iter()
                    .any(|n| n.secret == idx && n.stripped == stripped)
                {
                    return;
                }
                needles.push(Needle {
                    secret: idx,
                    encoding,
                    stripped,
                    exact_case,
                });
            };
            add("raw", value.clone(), true);
            add(
                "hex",
                data_encoding::HEXLOWER.encode(value).into_bytes(),
                false,
            );
            let std = |b: &[u8]| base64::engine::general_purpose::STANDARD_NO_PAD.encode(b);
            let url = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
            let b32 = |b: &[u8]| data_encoding::BASE32_NOPAD.encode(b);
            for k in 0..3 {
                add("base64", inner(value, k, 6, &std), true);
                add("base64url", inner(value, k, 6, &url), true);
            }
            for k in 0..5 {
                add("base32", inner(value, k, 5, &b32), false);
            }
        }
        let ac = if needles.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(needles.iter().map(|n| &n.stripped))
                    .map_err(|e| RuleError::Prefilter(e.to_string()))?,
            )
        };
        Ok(KnownSet {
            names,
            needles,
            ac,
            max_len,
        })
    }

    /// True when there is nothing to look for.
    pub fn is_empty(&self) -> bool {
        self.ac.is_none()
    }

    /// Finds known secrets in `hay`. Offsets are relative to `hay`.
    pub fn scan(&self, hay: &[u8], out: &mut Vec<KnownHit>) {
        let Some(ac) = &self.ac else { return };
        let view = View::build(hay);
        let before = out.len();
        for m in ac.find_overlapping_iter(&view.bytes) {
            let needle = &self.needles[m.pattern().as_usize()];
            let got = &view.bytes[m.start()..m.end()];
            if needle.exact_case && got != needle.stripped.as_slice() {
                continue;
            }
            let start = view.to_input(hay, m.start());
            let end = view.input_end(hay, m.end() - 1);
            let span = &hay[start..end];
            let mut encoding = needle.encoding.to_string();
            if span.len() != needle.stripped.len() || view.decoded {
                if span.contains(&b'%') {
                    encoding.push_str("+percent");
                }
                if span.contains(&b'\\') {
                    encoding.push_str("+escaped");
                }
                if span.iter().any(|&b| is_separator(b)) {
                    encoding.push_str("+separators");
                }
            }
            out.push(KnownHit {
                secret: needle.secret,
                start,
                end,
                encoding,
            });
        }
        // Keep one hit per secret occurrence: drop hits overlapping an earlier hit of the
        // same secret.
        let hits = &mut out[before..];
        hits.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
        let mut kept: Vec<KnownHit> = Vec::new();
        for h in out.drain(before..) {
            if kept
                .iter()
                .any(|k| k.secret == h.secret && h.start < k.end && k.start < h.end)
            {
                continue;
            }
            kept.push(h);
        }
        out.extend(kept);
    }
}

/// The normalised view of an input: separators stripped, escapes decoded when present.
struct View {
    bytes: Vec<u8>,
    /// True when escapes were decoded (the slow path with a full map).
    decoded: bool,
    /// Fast path: view length at each `CHECKPOINT` of input. Slow path: input offset of each
    /// view byte.
    map: Vec<usize>,
}

fn hexval(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes the escape starting at `hay[i]` (which is `%` or `\`). Returns the decoded byte
/// (`None` for an escaped separator like `\n`) and the escape length, or `None` if it is not an
/// escape we decode.
fn escape_at(hay: &[u8], i: usize) -> Option<(Option<u8>, usize)> {
    let at = |j: usize| hay.get(i + j).copied();
    match hay[i] {
        b'%' => {
            let v = hexval(at(1)?)? << 4 | hexval(at(2)?)?;
            Some((Some(v), 3))
        }
        b'\\' => match at(1)? {
            b'u' => {
                let mut v: u32 = 0;
                for j in 2..6 {
                    v = v << 4 | hexval(at(j)?)? as u32;
                }
                if v < 0x80 {
                    Some((Some(v as u8), 6))
                } else {
                    None
                }
            }
            b'x' => {
                let v = hexval(at(2)?)? << 4 | hexval(at(3)?)?;
                Some((Some(v), 4))
            }
            b'/' | b'\\' | b'"' | b'\'' => Some((at(1), 2)),
            b'n' | b'r' | b't' => Some((None, 2)),
            _ => None,
        },
        _ => None,
    }
}

/// True when `hay` contains an escape worth decoding (`%XX`, `\uXXXX`, `\xXX`, `\/`).
fn has_escapes(hay: &[u8]) -> bool {
    for i in memchr::memchr2_iter(b'%', b'\\', hay) {
        let next = hay.get(i + 1).copied().unwrap_or(0);
        let interesting = if hay[i] == b'%' {
            next.is_ascii_hexdigit()
        } else {
            matches!(next, b'u' | b'x' | b'/')
        };
        if interesting && escape_at(hay, i).is_some() {
            return true;
        }
    }
    false
}

impl View {
    fn build(hay: &[u8]) -> View {
        if has_escapes(hay) {
            Self::build_decoded(hay)
        } else {
            Self::build_fast(hay)
        }
    }

    /// Branch-free separator stripping with checkpoints.
    fn build_fast(hay: &[u8]) -> View {
        let mut bytes = vec![0u8; hay.len()];
        let mut map = Vec::with_capacity(hay.len() / CHECKPOINT + 2);
        let mut j = 0usize;
        for block in hay.chunks(CHECKPOINT) {
            map.push(j);
            let out = &mut bytes[j..j + block.len()];
            let mut w = 0usize;
            for &b in block {
                out[w] = b;
                w += 1 - SEP_TABLE[b as usize] as usize;
            }
            j += w;
        }
        bytes.truncate(j);
        View {
            bytes,
            decoded: false,
            map,
        }
    }

    /// Slow path: decode escapes and strip separators, recording the input offset of each byte.
    fn build_decoded(hay: &[u8]) -> View {
        let mut bytes = Vec::with_capacity(hay.len());
        let mut map = Vec::with_capacity(hay.len());
        let mut i = 0;
        while i < hay.len() {
            let b = hay[i];
            if b == b'%' || b == b'\\' {
                if let Some((val, len)) = escape_at(hay, i) {
                    if let Some(v) = val {
                        if !is_separator(v) {
                            bytes.push(v);
                            map.push(i);
                        }
                    }
                    i += len;
                    continue;
                }
            }
            if !is_separator(b) {
                bytes.push(b);
                map.push(i);
            }
            i += 1;
        }
        View {
            bytes,
            decoded: true,
            map,
        }
    }

    /// Input offset of view byte `idx`.
    fn to_input(&self, hay: &[u8], idx: usize) -> usize {
        if self.decoded {
            return self.map[idx];
        }
        // Last checkpoint block whose view start is <= idx and which is non-empty at idx.
        let block = self.map.partition_point(|&v| v <= idx).saturating_sub(1);
        let mut v = self.map[block];
        let mut i = block * CHECKPOINT;
        while i < hay.len() {
            if !is_separator(hay[i]) {
                if v == idx {
                    return i;
                }
                v += 1;
            }
            i += 1;
        }
        hay.len()
    }

    /// Input offset just past view byte `idx` (including the whole escape it came from).
    fn input_end(&self, hay: &[u8], idx: usize) -> usize {
        let start = self.to_input(hay, idx);
        if self.decoded && (hay[start] == b'%' || hay[start] == b'\\') {
            if let Some((_, len)) = escape_at(hay, start) {
                return start + len;
            }
        }
        start + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_inner_covers_all_alignments() {
        let secret = b"ghp_0123456789abcdefghijABCDEFGHIJ0123".to_vec();
        let set = KnownSet::new(&[("T".into(), secret.clone())]).unwrap();
        for k in 0..3 {
            let mut data = vec![b'x'; k];
            data.extend_from_slice(&secret);
            data.extend_from_slice(b"tail");
            let enc = base64::engine::general_purpose::STANDARD.encode(&data);
            let mut hits = Vec::new();
            set.scan(enc.as_bytes(), &mut hits);
            assert_eq!(hits.len(), 1, "alignment {k}");
            assert!(hits[0].encoding.starts_with("base64"));
        }
    }

    #[test]
    fn view_maps_back() {
        let hay = b"a-b c.d\nefgh ijkl";
        let v = View::build(hay);
        assert_eq!(v.bytes, b"abcdefghijkl");
        assert_eq!(v.to_input(hay, 4), 8);
        let hay = b"x%41b\\u0043\\/d";
        let v = View::build(hay);
        assert_eq!(v.bytes, b"xAbC/d");
        assert_eq!(v.to_input(hay, 3), 5);
        assert_eq!(v.input_end(hay, 3), 11);
    }

    #[test]
    fn short_secret_refused_without_value_in_error() {
        let e = KnownSet::new(&[("SHORT".into(), b"abc".to_vec())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SHORT") && !e.contains("abc"), "{e}");
    }
}
