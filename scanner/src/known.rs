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
/// View-to-input checkpoints are taken about every this many input bytes.
const CHECKPOINT: usize = 1024;

/// Separator bytes that may be inserted into a secret and are ignored when matching.
#[inline]
pub fn is_separator(b: u8) -> bool {
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
    /// Sampled 4-gram prefilter in front of `ac` (see [`GramFilter`]).
    filter: Option<GramFilter>,
    /// Longest raw secret in bytes (drives the streaming overlap).
    pub max_len: usize,
}

/// log2 of the largest prefilter bitmap, in bits (64 KiB).
const MAX_GRAM_BITS: u32 = 19;
/// log2 of the smallest prefilter bitmap, in bits (512 bytes).
const MIN_GRAM_BITS: u32 = 12;

/// The case-insensitive key of the 4 bytes at `v[i..i + 4]`: `| 0x20` maps each ASCII letter
/// to its lower case (and some other bytes onto each other), so keys of two byte strings that
/// are equal up to ASCII case are always equal.
#[inline(always)]
fn gram_key(v: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]) | 0x2020_2020
}

/// Exact-superset prefilter for the needle automaton. Only every `stride = shortest needle
/// length - 3`-th view position is looked up (a bitmap, then an exact sorted key list), and a
/// needle occurrence starting at view position `p` always has a looked-up position
/// `q = p + o` with `o < stride` and a whole 4-byte window of the needle there (`o <= L - 4`
/// for every needle length `L`). So the filter holds the keys of the windows at offsets
/// `0..min(stride, L - 3)` of each needle only — the needle's first `stride + 3` bytes, not all
/// of it: the CA key's encodings are thousands of bytes long, and with every window of theirs
/// the tables were 64 KiB of bitmap plus ~120 KiB of keys, looked up at random and cold in
/// the proxy, instead of a few KiB. Around each hit at `q` the automaton runs on
/// `[q - (stride - 1), q + longest)`, which contains every needle occurrence starting at
/// `q - o`.
#[derive(Debug, Clone)]
struct GramFilter {
    stride: usize,
    longest: usize,
    /// The bitmap has `1 << bits` bits.
    bits: u32,
    map: Vec<u64>,
    keys: Vec<u32>,
}

impl GramFilter {
    fn new(needles: &[Needle]) -> Option<GramFilter> {
        let shortest = needles.iter().map(|n| n.stripped.len()).min()?;
        let longest = needles.iter().map(|n| n.stripped.len()).max()?;
        if shortest < 4 {
            return None;
        }
        let stride = shortest - 3;
        let mut keys: Vec<u32> = needles
            .iter()
            .flat_map(|n| {
                let windows = stride.min(n.stripped.len() - 3);
                (0..windows).map(|i| gram_key(&n.stripped, i))
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        // About 32 bits per key: ~3 % of lookups reach the key list.
        let bits = (keys.len() * 32)
            .next_power_of_two()
            .trailing_zeros()
            .clamp(MIN_GRAM_BITS, MAX_GRAM_BITS);
        let mut map = vec![0u64; 1 << (bits - 6)];
        for &k in &keys {
            let h = Self::hash(k, bits);
            map[h >> 6] |= 1 << (h & 63);
        }
        Some(GramFilter {
            stride,
            longest,
            bits,
            map,
            keys,
        })
    }

    #[inline(always)]
    fn hash(key: u32, bits: u32) -> usize {
        (key.wrapping_mul(0x9E37_79B1) >> (32 - bits)) as usize
    }

    /// Merged view ranges that may hold a needle occurrence.
    fn regions(&self, v: &[u8], out: &mut Vec<(usize, usize)>) {
        if v.len() < 4 {
            return;
        }
        let mut i = 0;
        while i + 4 <= v.len() {
            let k = gram_key(v, i);
            let h = Self::hash(k, self.bits);
            if self.map[h >> 6] >> (h & 63) & 1 != 0 && self.keys.binary_search(&k).is_ok() {
                let rs = i.saturating_sub(self.stride - 1);
                let re = (i + self.longest).min(v.len());
                match out.last_mut() {
                    Some(last) if last.1 >= rs => last.1 = re,
                    _ => out.push((rs, re)),
                }
            }
            i += self.stride;
        }
    }
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
        let filter = GramFilter::new(&needles);
        Ok(KnownSet {
            names,
            needles,
            ac,
            filter,
            max_len,
        })
    }

    /// True when there is nothing to look for.
    pub fn is_empty(&self) -> bool {
        self.ac.is_none()
    }

    /// Finds known secrets in `hay`. Offsets are relative to `hay`. Returns false when the
    /// normalised view was built without decoding escapes (see [`View::build`]); true when it
    /// decoded them or when `hay` is too short to hold any needle.
    pub fn scan(&self, hay: &[u8], out: &mut Vec<KnownHit>) -> bool {
        let Some(ac) = &self.ac else { return true };
        // The view is never longer than the input: too short for any needle.
        if self
            .filter
            .as_ref()
            .is_some_and(|f| hay.len() < f.stride + 3)
        {
            return true;
        }
        let view = View::build(hay);
        let before = out.len();
        let mut regions = Vec::new();
        match &self.filter {
            Some(f) => f.regions(view.bytes(), &mut regions),
            None => regions.push((0, view.len)),
        }
        if regions.is_empty() {
            return view.decoded;
        }
        let matches = regions.iter().flat_map(|&(rs, re)| {
            ac.find_overlapping_iter(&view.bytes()[rs..re])
                .map(move |m| (m.pattern(), rs + m.start(), rs + m.end()))
        });
        for (pid, mstart, mend) in matches {
            let m = aho_corasick::Match::new(pid, mstart..mend);
            let needle = &self.needles[m.pattern().as_usize()];
            let got = &view.bytes()[m.start()..m.end()];
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
        view.decoded
    }
}

/// The normalised view of an input: separators stripped, escapes decoded when present.
struct View {
    /// The view is `buf[..len]`; `buf` is this thread's reused buffer (see [`VIEW_BUF`]).
    buf: Vec<u8>,
    len: usize,
    /// True when escapes were decoded.
    decoded: bool,
    /// `(input offset, view offset)` at the start of every block of about `CHECKPOINT` input
    /// bytes but the first (`(0, 0)`, implied); view offsets are mapped back to the input by
    /// re-running [`view_step`] from there.
    marks: Vec<(usize, usize)>,
}

/// Views larger than this are freed after the scan instead of kept for the next one.
const MAX_KEPT_VIEW: usize = 1 << 20;

thread_local! {
    /// The view buffer of the previous scan on this thread: reused, so a scan neither
    /// allocates nor zeroes its view (only bytes below the view length are ever read).
    static VIEW_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Drop for View {
    fn drop(&mut self) {
        if self.buf.len() <= MAX_KEPT_VIEW {
            let buf = std::mem::take(&mut self.buf);
            // During thread teardown the buffer is simply freed.
            let _ = VIEW_BUF.try_with(|b| b.set(buf));
        }
    }
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
pub(crate) fn has_escapes(hay: &[u8]) -> bool {
    // SAFETY: SSE2 is part of the x86_64 baseline: every x86_64 CPU has it.
    #[cfg(target_arch = "x86_64")]
    return unsafe { simd::has_escapes_sse2(hay) };
    #[cfg(not(target_arch = "x86_64"))]
    has_escapes_memmem(hay)
}

/// True when an escape worth decoding starts at `hay[i]`.
#[inline]
fn escape_worth_decoding(hay: &[u8], i: usize) -> bool {
    let start = match hay[i] {
        b'%' => true,
        b'\\' => matches!(hay.get(i + 1), Some(b'u' | b'x' | b'/')),
        _ => false,
    };
    start && escape_at(hay, i).is_some()
}

/// Positions of a 64-byte block where an escape worth decoding may start, from per-byte masks
/// of the block (bit `k` = byte `k`): `\\` followed by `u`/`x`/`/`, `%` followed by two hex
/// digits. `uxs` and `hex` must have their bits set for bytes past the block's valid part;
/// lookahead past bit 63 is assumed to match. A superset: survivors are confirmed with
/// [`escape_worth_decoding`].
#[inline(always)]
fn escape_candidates(bs: u64, pct: u64, uxs: u64, hex: u64) -> u64 {
    (bs & (uxs >> 1 | 1 << 63)) | (pct & (hex >> 1 | 1 << 63) & (hex >> 2 | 3 << 62))
}

/// True when one of the `cand` bits (positions relative to `at`) starts an escape worth
/// decoding.
#[inline]
fn any_escape(hay: &[u8], at: usize, mut cand: u64) -> bool {
    while cand != 0 {
        if escape_worth_decoding(hay, at + cand.trailing_zeros() as usize) {
            return true;
        }
        cand &= cand - 1;
    }
    false
}

/// [`has_escapes`] with one `memchr` search per escape kind (JSON text is dense in `\n` and
/// `\"`, which a search for every backslash would stop at).
#[cfg(any(test, not(target_arch = "x86_64")))]
fn has_escapes_memmem(hay: &[u8]) -> bool {
    for lit in [&b"\\u"[..], b"\\x", b"\\/"] {
        if memchr::memmem::find_iter(hay, lit).any(|i| escape_at(hay, i).is_some()) {
            return true;
        }
    }
    memchr::memchr_iter(b'%', hay).any(|i| escape_at(hay, i).is_some())
}

/// An implementation of the view's stripping pass (see [`Path::strip`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Portable scalar code (the reference).
    Scalar,
    /// SSSE3 + POPCNT, 16 bytes per step.
    #[cfg(target_arch = "x86_64")]
    Ssse3,
    /// AVX-512 F/BW/VBMI2 + POPCNT, 64 bytes per step.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Path {
    /// The fastest path this CPU supports.
    #[inline]
    fn best() -> Path {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vbmi2")
                && std::is_x86_feature_detected!("popcnt")
            {
                return Path::Avx512;
            }
            if std::is_x86_feature_detected!("ssse3") && std::is_x86_feature_detected!("popcnt") {
                return Path::Ssse3;
            }
        }
        Path::Scalar
    }

    /// True when stripping with detection costs about what stripping alone does (AVX-512),
    /// so [`View::build`] detects escapes in its stripping pass instead of a pass before it.
    #[inline]
    fn fuses_detection(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self == Path::Avx512;
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Every path this CPU supports (for tests).
    #[cfg(test)]
    fn available() -> Vec<Path> {
        let mut v = vec![Path::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("ssse3") && std::is_x86_feature_detected!("popcnt") {
                v.push(Path::Ssse3);
            }
            if Path::best() == Path::Avx512 {
                v.push(Path::Avx512);
            }
        }
        v
    }

    /// Copies `hay[start..end]` into `dst` without separator bytes and returns the number of
    /// bytes kept — or, when `detect` is set, `None` as soon as an escape worth decoding is
    /// found to start in `start..end` (escapes may extend past `end`; `hay` is looked at
    /// there). Bytes of `dst` past the kept ones may be overwritten.
    ///
    /// Panics unless `start <= end <= hay.len()` and `dst.len() >= end - start`.
    #[inline]
    fn strip(
        self,
        hay: &[u8],
        start: usize,
        end: usize,
        dst: &mut [u8],
        detect: bool,
    ) -> Option<usize> {
        assert!(start <= end && end <= hay.len() && dst.len() >= end - start);
        match self {
            // SAFETY (both unsafe blocks): the CPU features were checked when this path was
            // chosen (`best`/`available` are the only constructors); bounds asserted above.
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => unsafe {
                if detect {
                    simd::strip_avx512::<true>(hay, start, end, dst)
                } else {
                    simd::strip_avx512::<false>(hay, start, end, dst)
                }
            },
            // Without AVX-512, `View::build` checks for escapes in a pass of its own
            // (`has_escapes`); detection here is the plain scan, for the tests.
            _ => {
                if detect && scalar_detect(hay, start, end) {
                    return None;
                }
                Some(match self {
                    #[cfg(target_arch = "x86_64")]
                    Path::Ssse3 => unsafe { simd::strip_ssse3(hay, start, end, dst) },
                    _ => strip_scalar(&hay[start..end], dst),
                })
            }
        }
    }
}

/// True when an escape worth decoding starts in `hay[start..end]` (it may extend past `end`).
fn scalar_detect(hay: &[u8], start: usize, end: usize) -> bool {
    memchr::memchr2_iter(b'%', b'\\', &hay[start..end])
        .any(|k| escape_worth_decoding(hay, start + k))
}

/// Branch-free scalar separator stripping (the reference for the SIMD path).
fn strip_scalar(src: &[u8], dst: &mut [u8]) -> usize {
    let out = &mut dst[..src.len()];
    let mut w = 0usize;
    for &b in src {
        out[w] = b;
        w += 1 - SEP_TABLE[b as usize] as usize;
    }
    w
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Low-nibble table of the separator classifier: bit 0 if the nibble completes a `0x0_`
    /// separator (tab, LF, CR are `0x09 0x0A 0x0D`), bit 1 for a `0x2_` one (space, `-`, `.`
    /// are `0x20 0x2D 0x2E`).
    const LO_TAB: [u8; 16] = [2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 3, 2, 0];
    /// High-nibble table of the separator classifier: bit 0 for `0x0_`, bit 1 for `0x2_`.
    const HI_TAB: [u8; 16] = [1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    /// For each 8-bit keep-mask, the `pshufb` indices that move the kept bytes to the front.
    static COMPACT: [[u8; 8]; 256] = {
        let mut t = [[0u8; 8]; 256];
        let mut m = 0;
        while m < 256 {
            let mut w = 0;
            let mut b = 0;
            while b < 8 {
                if m >> b & 1 == 1 {
                    t[m][w] = b as u8;
                    w += 1;
                }
                b += 1;
            }
            m += 1;
        }
        t
    };

    /// SSSE3 separator stripping of `hay[start..end]` into `dst` (returns the bytes kept), 16
    /// bytes per step: a two-`pshufb` nibble classifier finds the separators, then each
    /// 8-byte half is compacted with a table-driven `pshufb`.
    ///
    /// # Safety
    /// The CPU must support SSSE3 and POPCNT; `start <= end <= hay.len()` and
    /// `dst.len() >= end - start`.
    #[target_feature(enable = "ssse3,popcnt")]
    pub(super) unsafe fn strip_ssse3(
        hay: &[u8],
        start: usize,
        end: usize,
        dst: &mut [u8],
    ) -> usize {
        debug_assert!(start <= end && end <= hay.len() && dst.len() >= end - start);
        let lo_tab = _mm_loadu_si128(LO_TAB.as_ptr() as *const __m128i);
        let hi_tab = _mm_loadu_si128(HI_TAB.as_ptr() as *const __m128i);
        let nib = _mm_set1_epi8(0x0f);
        let eight = _mm_set1_epi8(8);
        let zero = _mm_setzero_si128();
        let sp = hay.as_ptr();
        let dp = dst.as_mut_ptr();
        // Kept bytes never outrun read bytes (`j <= i - start`), so the 8-byte stores of a
        // step at `i` end at most at `dst[i + 16 - start]`, within `dst`.
        let step = |v: __m128i, j: usize| -> usize {
            let lo = _mm_shuffle_epi8(lo_tab, _mm_and_si128(v, nib));
            let hi = _mm_shuffle_epi8(hi_tab, _mm_and_si128(_mm_srli_epi16(v, 4), nib));
            let sep = _mm_cmpeq_epi8(_mm_and_si128(lo, hi), zero);
            let keep = _mm_movemask_epi8(sep) as u32; // bit set = keep
            let k0 = (keep & 0xff) as usize;
            let k1 = (keep >> 8) as usize;
            // SAFETY: the tables hold 8 bytes per entry; the stores are in `dst` (see above).
            unsafe {
                let s0 = _mm_loadl_epi64(COMPACT[k0].as_ptr() as *const __m128i);
                let s1 = _mm_add_epi8(
                    _mm_loadl_epi64(COMPACT[k1].as_ptr() as *const __m128i),
                    eight,
                );
                _mm_storel_epi64(dp.add(j) as *mut __m128i, _mm_shuffle_epi8(v, s0));
                let j = j + k0.count_ones() as usize;
                _mm_storel_epi64(dp.add(j) as *mut __m128i, _mm_shuffle_epi8(v, s1));
                j + k1.count_ones() as usize
            }
        };
        let (mut i, mut j) = (start, 0usize);
        while i + 64 <= end {
            for k in 0..4 {
                // SAFETY: i + 64 <= end <= hay.len().
                let v = unsafe { _mm_loadu_si128(sp.add(i + 16 * k) as *const __m128i) };
                j = step(v, j);
            }
            i += 64;
        }
        while i + 16 <= end {
            // SAFETY: i + 16 <= end <= hay.len().
            let v = unsafe { _mm_loadu_si128(sp.add(i) as *const __m128i) };
            j = step(v, j);
            i += 16;
        }
        j + super::strip_scalar(&hay[i..end], &mut dst[j..])
    }

    /// Escape candidates of a 64-byte block (bytes past `valid` are zero), see
    /// [`super::escape_candidates`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn candidates_avx512(v: __m512i, valid: u64) -> u64 {
        let bs = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'\\' as i8));
        let pc = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'%' as i8));
        if bs | pc == 0 {
            return 0;
        }
        let uxs = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'u' as i8))
            | _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'x' as i8))
            | _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'/' as i8));
        let d = _mm512_sub_epi8(v, _mm512_set1_epi8(b'0' as i8));
        let l = _mm512_sub_epi8(
            _mm512_or_si512(v, _mm512_set1_epi8(0x20)),
            _mm512_set1_epi8(b'a' as i8),
        );
        let hex = _mm512_cmple_epu8_mask(d, _mm512_set1_epi8(9))
            | _mm512_cmple_epu8_mask(l, _mm512_set1_epi8(5));
        super::escape_candidates(bs, pc, uxs | !valid, hex | !valid)
    }

    /// Keep mask (non-separator bytes) of a 64-byte block: the nibble classifier of
    /// [`LO_TAB`]/[`HI_TAB`] (`vpshufb` ×2 + `vptestnmb`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn keep_avx512(v: __m512i) -> u64 {
        let lo_tab = _mm512_broadcast_i32x4(_mm_setr_epi8(
            2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 3, 2, 0,
        ));
        let hi_tab = _mm512_broadcast_i32x4(_mm_setr_epi8(
            1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ));
        let nib = _mm512_set1_epi8(0x0f);
        let lo = _mm512_shuffle_epi8(lo_tab, _mm512_and_si512(v, nib));
        let hi = _mm512_shuffle_epi8(hi_tab, _mm512_and_si512(_mm512_srli_epi16(v, 4), nib));
        _mm512_testn_epi8_mask(lo, hi)
    }

    /// The full 64-byte blocks of `src[i..end]`, stripped into `dst` from `j`, without any
    /// call in the loop (so the constants stay in registers). With `DETECT`, stops before the
    /// first block with escape candidates and returns them (nonzero) with `(i, j)` there.
    ///
    /// # Safety
    /// As [`strip_avx512`], with `sp`/`dp` the pointers of `hay`/`dst`, `start <= i <= end`
    /// and `j <= i - start`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2,popcnt")]
    #[inline(never)]
    unsafe fn blocks_avx512<const DETECT: bool>(
        sp: *const u8,
        dp: *mut u8,
        mut i: usize,
        mut j: usize,
        end: usize,
    ) -> (usize, usize, u64) {
        while i + 64 <= end {
            // SAFETY: i + 64 <= end <= hay.len().
            let v = unsafe { _mm512_loadu_si512(sp.add(i) as *const __m512i) };
            if DETECT {
                let cand = candidates_avx512(v, !0);
                if cand != 0 {
                    return (i, j, cand);
                }
            }
            let keep = keep_avx512(v);
            // SAFETY: kept bytes never outrun read bytes (`j <= i - start`): the store at `j`
            // ends at most at `dst[i + 64 - start] <= dst[end - start]`.
            unsafe {
                _mm512_storeu_si512(
                    dp.add(j) as *mut __m512i,
                    _mm512_maskz_compress_epi8(keep, v),
                )
            };
            j += keep.count_ones() as usize;
            i += 64;
        }
        (i, j, 0)
    }

    /// AVX-512 implementation of [`super::Path::strip`] (escape detection when `DETECT`), 64
    /// bytes per step: the nibble classifier gives the keep mask, `vpcompressb` (register
    /// form: the memory form is slow on Zen 4) packs the kept bytes, and one unaligned store
    /// writes them; the last partial block uses a masked load and a masked store. `\\` and `%`
    /// found in a block are refined with vector masks, and the survivors confirmed exactly.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW, VBMI2 and POPCNT; `start <= end <= hay.len()` and
    /// `dst.len() >= end - start`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2,popcnt")]
    pub(super) unsafe fn strip_avx512<const DETECT: bool>(
        hay: &[u8],
        start: usize,
        end: usize,
        dst: &mut [u8],
    ) -> Option<usize> {
        debug_assert!(start <= end && end <= hay.len() && dst.len() >= end - start);
        let sp = hay.as_ptr();
        let dp = dst.as_mut_ptr();
        let (mut i, mut j) = (start, 0usize);
        while i < end {
            // SAFETY: the caller's contract, and `j <= i - start` (see `blocks_avx512`).
            let (ni, nj, cand) = unsafe { blocks_avx512::<DETECT>(sp, dp, i, j, end) };
            (i, j) = (ni, nj);
            let left = end - i;
            if cand == 0 && left == 0 {
                break;
            }
            let valid = if left >= 64 {
                !0u64
            } else {
                (1u64 << left) - 1
            };
            // SAFETY: the masked load reads only the `min(left, 64)` bytes of `hay[i..end]`
            // (masked-off bytes are not accessed and read as zero).
            let v = unsafe { _mm512_maskz_loadu_epi8(valid, sp.add(i) as *const i8) };
            let cand = if cand == 0 && DETECT {
                candidates_avx512(v, valid)
            } else {
                cand
            };
            if super::any_escape(hay, i, cand) {
                return None;
            }
            let keep = keep_avx512(v) & valid;
            let kept = keep.count_ones() as usize;
            let store = if kept >= 64 {
                u64::MAX
            } else {
                (1u64 << kept) - 1
            };
            // SAFETY: only the `kept <= min(left, 64)` packed bytes are stored at `j <= i -
            // start`, so within `dst[..end - start]`.
            unsafe {
                _mm512_mask_storeu_epi8(
                    dp.add(j) as *mut i8,
                    store,
                    _mm512_maskz_compress_epi8(keep, v),
                )
            };
            j += kept;
            i += left.min(64);
        }
        Some(j)
    }

    /// [`super::has_escapes`], 32 positions per step: each `%` or `\\` is checked exactly.
    #[target_feature(enable = "sse2")]
    pub(super) fn has_escapes_sse2(hay: &[u8]) -> bool {
        let n = hay.len();
        let (bs, pc) = (_mm_set1_epi8(b'\\' as i8), _mm_set1_epi8(b'%' as i8));
        let mut i = 0;
        while i + 32 <= n {
            // SAFETY: i + 32 <= n, so 32 bytes are readable at i.
            let (v0, v1) = unsafe {
                let p = hay.as_ptr().add(i);
                (
                    _mm_loadu_si128(p as *const __m128i),
                    _mm_loadu_si128(p.add(16) as *const __m128i),
                )
            };
            let c0 = _mm_or_si128(_mm_cmpeq_epi8(v0, bs), _mm_cmpeq_epi8(v0, pc));
            let c1 = _mm_or_si128(_mm_cmpeq_epi8(v1, bs), _mm_cmpeq_epi8(v1, pc));
            let mut m = _mm_movemask_epi8(c0) as u32 | (_mm_movemask_epi8(c1) as u32) << 16;
            while m != 0 {
                if super::escape_worth_decoding(hay, i + m.trailing_zeros() as usize) {
                    return true;
                }
                m &= m - 1;
            }
            i += 32;
        }
        (i..n).any(|j| super::escape_worth_decoding(hay, j))
    }
}
/// One step of the view transformation at `hay[i]`: the next input offset and the view byte
/// produced, if any.
#[inline]
fn view_step(hay: &[u8], i: usize, decode: bool) -> (usize, Option<u8>) {
    let b = hay[i];
    if decode && (b == b'%' || b == b'\\') {
        if let Some((val, len)) = escape_at(hay, i) {
            return (i + len, val.filter(|&v| !is_separator(v)));
        }
    }
    (i + 1, (!is_separator(b)).then_some(b))
}

impl View {
    /// Builds the view: escapes are decoded when `hay` has any (see [`has_escapes`]).
    fn build(hay: &[u8]) -> View {
        Self::build_with(hay, Path::best())
    }

    /// [`View::build`] with the given stripping path. On AVX-512 one pass strips separators
    /// block by block while looking for escapes worth decoding and, when one is found, the
    /// build restarts in decoding mode; other paths check for escapes first. In decoding mode, where runs without `%` or `\\` take the stripping loop (no escape
    /// can start in them, so the result is the same) and escapes are decoded one by one.
    fn build_with(hay: &[u8], path: Path) -> View {
        // Every path writes only below `src.len()` of the part of `dst` it is given, and
        // decoding never makes the view longer than the input.
        let mut bytes = VIEW_BUF.try_with(|b| b.take()).unwrap_or_default();
        if bytes.len() < hay.len() {
            bytes.resize(hay.len(), 0);
        }
        // The first block's mark, `(0, 0)`, is implied: inputs of one block allocate none.
        let mut marks = Vec::with_capacity(hay.len().saturating_sub(1) / CHECKPOINT);
        let (mut i, mut j) = (0usize, 0usize);
        // Without AVX-512 a separate escape check first is cheaper than stripping and
        // detecting in one pass (callgrind, 10 KB JSON body: 65 K vs 75 K instructions).
        let fused = path.fuses_detection();
        let mut decode = !fused && has_escapes(hay);
        while !decode && i < hay.len() {
            if i > 0 {
                marks.push((i, j));
            }
            let end = (i + CHECKPOINT).min(hay.len());
            match path.strip(hay, i, end, &mut bytes[j..], fused) {
                Some(kept) => j += kept,
                None => {
                    decode = true;
                    break;
                }
            }
            i = end;
        }
        if decode {
            marks.clear();
            (i, j) = (0, 0);
        }
        while decode && i < hay.len() {
            if i > 0 {
                marks.push((i, j));
            }
            let end = (i + CHECKPOINT).min(hay.len());
            // An escape may end past `end`: the next block starts after it.
            while i < end {
                let run = memchr::memchr2(b'%', b'\\', &hay[i..end]).unwrap_or(end - i);
                j += path
                    .strip(hay, i, i + run, &mut bytes[j..], false)
                    .unwrap_or_default();
                i += run;
                if i < end {
                    let (next, out) = view_step(hay, i, true);
                    if let Some(v) = out {
                        bytes[j] = v;
                        j += 1;
                    }
                    i = next;
                }
            }
        }
        View {
            buf: bytes,
            len: j,
            decoded: decode,
            marks,
        }
    }

    /// The view bytes.
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Input offset of view byte `idx`.
    fn to_input(&self, hay: &[u8], idx: usize) -> usize {
        // The last mark at or before `idx`; the implied first mark `(0, 0)` when none is.
        let (mut i, mut v) = match self.marks.partition_point(|&(_, v)| v <= idx) {
            0 => (0, 0),
            m => self.marks[m - 1],
        };
        while i < hay.len() {
            let (next, out) = view_step(hay, i, self.decoded);
            if out.is_some() {
                if v == idx {
                    return i;
                }
                v += 1;
            }
            i = next;
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
    fn has_escapes_same_as_memmem_search() {
        let mut rng = crate::corpus::Rng::new(5);
        let alphabet = b"%\\\\uux/0aF7g \n";
        let mut found = 0;
        for len in 0..80 {
            for _ in 0..300 {
                let hay: Vec<u8> = (0..len)
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect();
                let want = has_escapes_memmem(&hay);
                assert_eq!(
                    has_escapes(&hay),
                    want,
                    "{:?}",
                    String::from_utf8_lossy(&hay)
                );
                found += want as usize;
            }
        }
        assert!(found > 1000);
        // One escape at every offset of a longer clean text, and cut at its end.
        for esc in [
            &b"%4a"[..],
            b"\\u0041",
            b"\\x4a",
            b"\\/",
            b"\\u00e9",
            b"%4",
            b"\\n",
        ] {
            for at in 0..40 {
                let mut hay = b"let x = y.z(1) - 2;\n".repeat(3);
                hay.splice(at..at, esc.iter().copied());
                for end in at..hay.len() {
                    let h = &hay[..end];
                    assert_eq!(has_escapes(h), has_escapes_memmem(h));
                }
            }
        }
    }

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
    fn reused_view_buffer_holds_no_stale_bytes() {
        let secret = b"ghp_0123456789abcdefghijABCDEFGHIJ0123".to_vec();
        let set = KnownSet::new(&[("T".into(), secret.clone())]).unwrap();
        let mut long = b"x = 1;\n".repeat(200);
        long.extend_from_slice(&secret);
        let mut hits = Vec::new();
        set.scan(&long, &mut hits);
        assert_eq!(hits.len(), 1);
        // A shorter input over the same (reused) buffer: the old secret bytes lie past its view.
        let short = &long[..long.len() - 10];
        hits.clear();
        set.scan(short, &mut hits);
        assert!(hits.is_empty());
        assert_eq!(View::build(b"a b").bytes(), b"ab");
        // Views over the kept size are freed, not kept; the next one still works.
        assert!(View::build(&vec![b'y'; MAX_KEPT_VIEW + 1]).bytes().len() > MAX_KEPT_VIEW);
        assert_eq!(View::build(b"c-d").bytes(), b"cd");
    }

    #[test]
    fn view_maps_back() {
        let hay = b"a-b c.d\nefgh ijkl";
        let v = View::build(hay);
        assert_eq!(v.bytes(), b"abcdefghijkl");
        assert_eq!(v.to_input(hay, 4), 8);
        let hay = b"x%41b\\u0043\\/d";
        let v = View::build(hay);
        assert_eq!(v.bytes(), b"xAbC/d");
        assert_eq!(v.to_input(hay, 3), 5);
        assert_eq!(v.input_end(hay, 3), 11);
    }

    /// The sampled 4-gram prefilter never loses a hit: same hits as the automaton over the
    /// whole view, on random text with planted encodings (separators, escapes, case changes,
    /// truncations) at random offsets.
    #[test]
    fn gram_filter_is_exact_superset() {
        use crate::corpus::Rng;
        let mut rng = Rng::new(7);
        let secrets: Vec<(String, Vec<u8>)> = vec![
            (
                "A".into(),
                b"ghp_0123456789abcdefghijABCDEFGHIJ0123".to_vec(),
            ),
            ("B".into(), b"short-pw-9".to_vec()),
            ("C".into(), rng.chars('w', 93).into_bytes()),
            // Long like the CA key: the filter holds only its needles' first windows.
            ("D".into(), rng.chars('w', 700).into_bytes()),
        ];
        let set = KnownSet::new(&secrets).unwrap();
        let f = set.filter.as_ref().expect("filter");
        assert!(f.keys.len() <= set.needles.len() * f.stride);
        assert!(
            f.map.len() * 8 <= 8192,
            "bitmap of {} bytes",
            f.map.len() * 8
        );
        let mut plain = set.clone();
        plain.filter = None;
        let alphabet = b"abcdefXYZ0123456789 -._\\%/+=\n\"{}:uxAB";
        let mut total = 0;
        for round in 0..400 {
            let mut hay: Vec<u8> = (0..rng.below(3000))
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            for _ in 0..rng.below(4) {
                let n = &set.needles[rng.below(set.needles.len())].stripped;
                let mut enc = Vec::new();
                let cut = usize::from(rng.below(4) == 0);
                for &b in &n[..n.len() - cut] {
                    match rng.below(60) {
                        0 => enc.extend_from_slice(format!("%{b:02X}").as_bytes()),
                        1 => enc.extend_from_slice(format!("\\u{:04x}", b).as_bytes()),
                        2 => enc.extend_from_slice(b"- "),
                        3 => enc.push(b.to_ascii_uppercase()),
                        4 => enc.push(b.to_ascii_lowercase()),
                        _ => enc.push(b),
                    }
                    if rng.below(20) == 0 {
                        enc.push(b'\n');
                    }
                }
                let at = rng.below(hay.len() + 1);
                hay.splice(at..at, enc);
            }
            let key = |h: &KnownHit| (h.secret, h.start, h.end, h.encoding.clone());
            let mut a: Vec<_> = Vec::new();
            set.scan(&hay, &mut a);
            let mut b: Vec<_> = Vec::new();
            plain.scan(&hay, &mut b);
            let (a, b): (Vec<_>, Vec<_>) =
                (a.iter().map(key).collect(), b.iter().map(key).collect());
            assert_eq!(a, b, "round {round}");
            total += a.len();
        }
        assert!(total > 100, "only {total} hits planted");
    }

    /// Every stripping path equals the scalar reference (kept bytes, escape detection), with
    /// `dst` exactly as long as the input (a canary past it must stay untouched).
    #[test]
    fn simd_strip_matches_scalar() {
        use crate::corpus::Rng;
        let mut rng = Rng::new(11);
        let paths = Path::available();
        for len in (0..300).chain([1000, 1024, 4097]) {
            for dense in [2, 5, 256] {
                let src: Vec<u8> = (0..len)
                    .map(|_| match rng.below(dense) {
                        0 => b"-. \t\r\n"[rng.below(6)],
                        1 => b"%\\ux/4a"[rng.below(7)],
                        _ => rng.below(256) as u8,
                    })
                    .collect();
                let start = rng.below(len.min(70) + 1);
                let want = strip(&src[start..]);
                let detect = (start..len).any(|k| escape_worth_decoding(&src, k));
                for &path in &paths {
                    let mut buf = vec![0xAAu8; len - start + 64];
                    let (dst, canary) = buf.split_at_mut(len - start);
                    let n = path.strip(&src, start, len, dst, false).unwrap();
                    assert_eq!(&dst[..n], &want[..], "{path:?} len {len} start {start}");
                    assert!(canary.iter().all(|&b| b == 0xAA), "{path:?} len {len}");
                    let got = path.strip(&src, start, len, dst, true);
                    assert_eq!(got.is_none(), detect, "{path:?} len {len} start {start}");
                    if let Some(n) = got {
                        assert_eq!(&dst[..n], &want[..]);
                    }
                    assert!(canary.iter().all(|&b| b == 0xAA), "{path:?} len {len}");
                }
            }
        }
    }

    /// The view bytes, `decoded`, the marks and the input offset of every view byte.
    type Reference = (Vec<u8>, bool, Vec<(usize, usize)>, Vec<usize>);

    /// The view as built before the fused pass: `has_escapes` first, then every block
    /// transformed with [`view_step`].
    fn reference_view(hay: &[u8]) -> Reference {
        let decode = has_escapes_memmem(hay);
        let (mut out, mut marks, mut from) = (Vec::new(), Vec::new(), Vec::new());
        let mut i = 0;
        while i < hay.len() {
            if i > 0 {
                marks.push((i, out.len()));
            }
            let end = (i + CHECKPOINT).min(hay.len());
            while i < end {
                let (next, b) = view_step(hay, i, decode);
                if let Some(b) = b {
                    out.push(b);
                    from.push(i);
                }
                i = next;
            }
        }
        (out, decode, marks, from)
    }

    /// Builds the view of `hay` with every available path and compares it with
    /// [`reference_view`]: bytes, length, `decoded`, marks and the mapping back to the input.
    fn check_view(hay: &[u8]) -> bool {
        let (want, decoded, marks, from) = reference_view(hay);
        for path in Path::available() {
            let v = View::build_with(hay, path);
            let ctx = || format!("{path:?} {:?}", String::from_utf8_lossy(hay));
            assert_eq!(v.bytes(), &want[..], "{}", ctx());
            assert_eq!(v.decoded, decoded, "{}", ctx());
            assert_eq!(v.marks, marks, "{}", ctx());
            for (idx, &at) in from.iter().enumerate() {
                assert_eq!(v.to_input(hay, idx), at, "{}", ctx());
            }
        }
        assert_eq!(has_escapes(hay), decoded);
        decoded
    }

    #[test]
    fn view_paths_match_reference() {
        use crate::corpus::Rng;
        let mut rng = Rng::new(13);
        let alphabets: [&[u8]; 4] = [
            b"%\\\\uux/0aF7g \n",
            b"ab0F9u/x%\\-. \t\r\n\"",
            // Only escapes not worth decoding: the fused pass must not stop at them.
            b"\\\\n\"rtgz -.%",
            b"abcdefghijklmnopqrstuvwxyz0123456789 \n",
        ];
        let mut decoded = 0;
        for len in 0..200 {
            for alphabet in alphabets {
                for _ in 0..8 {
                    let hay: Vec<u8> = (0..len)
                        .map(|_| alphabet[rng.below(alphabet.len())])
                        .collect();
                    decoded += check_view(&hay) as usize;
                }
            }
        }
        assert!(decoded > 1000, "{decoded}");
        for len in [1023, 1024, 1025, 2047, 2048, 2049, 3000, 4100] {
            for alphabet in alphabets {
                for _ in 0..4 {
                    let hay: Vec<u8> = (0..len)
                        .map(|_| match rng.below(200) {
                            0 => alphabet[rng.below(alphabet.len())],
                            _ => b"abcdefghijklmnopqrstuvwxyz \n\\n\\\""[rng.below(31)],
                        })
                        .collect();
                    check_view(&hay);
                }
            }
        }
    }

    /// One escape (whole or truncated) at and around every 16/32/64-byte and checkpoint
    /// boundary of JSON-like text dense in `\n` and `\"`, and at the very end of the input.
    #[test]
    fn view_escapes_at_block_boundaries() {
        let base = b"{\"a\": \"x\\ny\\\"z\", \"k-1.2\": 1}\t\r\n".repeat(80);
        assert!(!has_escapes(&base));
        let escapes: [&[u8]; 12] = [
            b"%4a", b"%4", b"%", b"\\u0041", b"\\u00e9", b"\\u004", b"\\x4a", b"\\x4", b"\\/",
            b"\\", b"\\n", b"%2D",
        ];
        let mut decoded = 0;
        for esc in escapes {
            for b in [16, 32, 48, 64, 128, 1024, 2048] {
                for at in b - 6..=b + 2 {
                    let mut hay = base.clone();
                    hay.splice(at..at, esc.iter().copied());
                    decoded += check_view(&hay) as usize;
                    // Cut inside and right after the escape: truncated at the very end.
                    for end in at..=(at + esc.len()).min(hay.len()) {
                        check_view(&hay[..end]);
                    }
                }
            }
            for len in [0, 1, 15, 63, 64, 65, 127, 1023] {
                let mut hay = base[..len].to_vec();
                hay.extend_from_slice(esc);
                check_view(&hay);
            }
        }
        assert!(decoded > 300, "{decoded}");
    }

    #[test]
    fn short_secret_refused_without_value_in_error() {
        let e = KnownSet::new(&[("SHORT".into(), b"abc".to_vec())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SHORT") && !e.contains("abc"), "{e}");
    }

    /// Times the view build per path (`cargo test --release -p bottle-scanner --lib
    /// view_build_speed -- --ignored --nocapture`); `Old` is the former two passes
    /// (`has_escapes` checking every `%` and `\\` exactly, then the SSSE3 strip).
    #[test]
    #[ignore]
    fn view_build_speed() {
        use std::time::Instant;
        #[cfg(target_arch = "x86_64")]
        fn old_has_escapes(hay: &[u8]) -> bool {
            let mut i = 0;
            while i + 16 <= hay.len() {
                let mut m = 0u64;
                for k in 0..16 {
                    m |= u64::from(matches!(hay[i + k], b'%' | b'\\')) << k;
                }
                if any_escape(hay, i, m) {
                    return true;
                }
                i += 16;
            }
            (i..hay.len()).any(|k| escape_worth_decoding(hay, k))
        }
        let mut src = Vec::new();
        for e in std::fs::read_dir("/usr/include").unwrap().flatten() {
            if let Ok(b) = std::fs::read(e.path()) {
                src.extend_from_slice(&b);
            }
        }
        let mut rng = crate::corpus::Rng::new(3);
        let mut json = b"{\"messages\":[{\"role\":\"user\",\"content\":\"".to_vec();
        while json.len() < 10_000 {
            let n = 1 + rng.below(9);
            json.extend_from_slice(rng.chars('w', n).as_bytes());
            json.extend_from_slice([&b" "[..], b"\\n", b"\\\"", b", "][rng.below(4)]);
        }
        json.extend_from_slice(b"\"}]}");
        for (name, data, chunk) in [("source", &src, 16384), ("json10k", &json, 1 << 20)] {
            let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
            let reps = (200_000_000 / data.len()).max(1);
            let mut line = format!("{name} ({} B):", data.len());
            #[cfg(target_arch = "x86_64")]
            {
                let mut dst = vec![0u8; chunk + 16];
                let t = Instant::now();
                for _ in 0..reps {
                    for c in &chunks {
                        std::hint::black_box(old_has_escapes(c));
                        std::hint::black_box(Path::Ssse3.strip(c, 0, c.len(), &mut dst, false));
                    }
                }
                let gbs = (reps * data.len()) as f64 / t.elapsed().as_secs_f64() / 1e9;
                line += &format!(" Old {gbs:.2} GB/s");
            }
            for path in Path::available() {
                let t = Instant::now();
                for _ in 0..reps {
                    for c in &chunks {
                        std::hint::black_box(View::build_with(c, path).len);
                    }
                }
                let gbs = (reps * data.len()) as f64 / t.elapsed().as_secs_f64() / 1e9;
                line += &format!(" {path:?} {gbs:.2} GB/s");
            }
            eprintln!("{line}");
        }
    }
}
