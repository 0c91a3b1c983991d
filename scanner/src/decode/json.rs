//! A small JSON tokenizer over the raw bytes: every string (keys and values) with its JSON path
//! and byte range, so `scan_body` can skip re-scanning strings whose bytes the raw body scan
//! already covered (see `body.rs`). Strings are scanned and unescaped 32 bytes at a time
//! (bit masks of `"` and `\` bytes from SSE2, or AVX2 when the CPU has it).

use std::fmt::Write as _;
use std::mem::MaybeUninit;

/// One JSON string of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonStr {
    /// JSON path as `scan_body` reports it (`$.a.b[1]`; for a key, the path of its member).
    pub path: String,
    /// Byte range of the string's content (between the quotes) in the document.
    pub start: usize,
    pub end: usize,
    /// The content contains backslash escapes (so it differs from its raw bytes).
    pub escaped: bool,
    /// This is an object key.
    pub key: bool,
}

/// Nesting limit (serde_json's default recursion limit is 128).
const MAX_DEPTH: usize = 128;

/// All strings of the JSON document `data` in document order, or `None` if `data` is not
/// JSON (this tokenizer is at least as lenient as serde_json: it does not check UTF-8, control
/// bytes in strings or number syntax beyond the character set).
pub(crate) fn strings(data: &[u8], root: &str) -> Option<Vec<JsonStr>> {
    strings_with(data, root, true)
}

/// [`strings`], using AVX2 only if `allow_avx2` (and the CPU has it).
fn strings_with(data: &[u8], root: &str, allow_avx2: bool) -> Option<Vec<JsonStr>> {
    let scan = if allow_avx2 && has_avx2() {
        Scan::Avx2
    } else {
        Scan::Blocks
    };
    strings_scanned(data, root, scan)
}

/// [`strings`] with the given string scan.
fn strings_scanned(data: &[u8], root: &str, scan: Scan) -> Option<Vec<JsonStr>> {
    let mut t = Tok {
        d: data,
        i: 0,
        out: Vec::new(),
        scan,
    };
    let mut path = format!("{root}$");
    t.ws();
    t.value(&mut path, 0)?;
    t.ws();
    (t.i == data.len()).then_some(t.out)
}

/// Decodes the content of a JSON string (`raw` is what is between the quotes), giving the same
/// bytes as serde_json for every string serde_json accepts. `None` on a bad escape or a lone
/// surrogate (which serde_json refuses); invalid UTF-8 outside escapes is passed through.
pub(crate) fn unescape(raw: &[u8]) -> Option<Vec<u8>> {
    unescape_mapped(raw, &mut Vec::new())
}

/// Bytes per SIMD block (two SSE2 vectors or one AVX2 vector).
const BLOCK: usize = 32;

/// [`unescape`], also recording every escape as `(raw start, raw end, end in the output)`
/// in `escapes` (in order), so offsets can be mapped between `raw` and the result.
pub(crate) fn unescape_mapped(
    raw: &[u8],
    escapes: &mut Vec<(usize, usize, usize)>,
) -> Option<Vec<u8>> {
    unescape_mapped_with(raw, escapes, true)
}

/// True when the CPU supports AVX2.
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// [`unescape_mapped`], using AVX2 only if `allow_avx2` (and the CPU has it).
fn unescape_mapped_with(
    raw: &[u8],
    escapes: &mut Vec<(usize, usize, usize)>,
    allow_avx2: bool,
) -> Option<Vec<u8>> {
    let n = raw.len();
    // The output is never longer than the input: with a block of slack for whole-block
    // stores, it is written in place into the spare capacity.
    let mut out = Vec::with_capacity(n + BLOCK);
    let dst = &mut out.spare_capacity_mut()[..n + BLOCK];
    // Room for one escape per 24 bytes of `raw` (as many bytes as `raw` has): source code as
    // JSON has about one per 30.
    escapes.reserve(n / 24);
    #[cfg(target_arch = "x86_64")]
    let w = if allow_avx2 && has_avx2() {
        // SAFETY: the CPU supports AVX2 (just checked).
        unsafe { unescape_avx2(raw, dst, escapes) }
    } else {
        unescape_into::<false>(raw, dst, escapes)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let w = {
        let _ = allow_avx2;
        unescape_into::<false>(raw, dst, escapes)
    };
    let w = w?;
    // SAFETY: `unescape_into` initialises `dst[..w]` (it never counts a byte in `w` that it
    // did not write), and `dst` is the spare capacity of the empty `out`.
    unsafe { out.set_len(w) };
    Some(out)
}

/// [`unescape_into`] with AVX2 block scans.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn unescape_avx2(
    raw: &[u8],
    dst: &mut [MaybeUninit<u8>],
    escapes: &mut Vec<(usize, usize, usize)>,
) -> Option<usize> {
    unescape_into::<true>(raw, dst, escapes)
}

/// Unescapes `raw` into `dst` (at least `raw.len() + BLOCK` long; [`special_masks`] says
/// what `AVX2` means), recording escapes as [`unescape_mapped`] does. Returns the output
/// length; every byte of `dst` below it is written.
#[inline(always)]
fn unescape_into<const AVX2: bool>(
    raw: &[u8],
    dst: &mut [MaybeUninit<u8>],
    escapes: &mut Vec<(usize, usize, usize)>,
) -> Option<usize> {
    let n = raw.len();
    let limit = n.saturating_sub(BLOCK - 1);
    let (i, mut w) = unescape_blocks::<AVX2>(raw, 0, limit, 0, dst, 0, escapes)?;
    if i < n {
        // The tail (under a block) goes through a zero-padded copy: a zero byte is never
        // part of an escape, so escapes cut off by the end fail as they would on `raw`.
        let t = n - i;
        let mut buf = [0u8; 2 * BLOCK];
        buf[..t].copy_from_slice(&raw[i..]);
        let (j, w2) = unescape_blocks::<AVX2>(&buf, 0, t, i, dst, w, escapes)?;
        // A last whole-block copy counted padding bytes past the end.
        w = w2 - (j - t);
    }
    Some(w)
}

/// Unescapes `s[i..]` into `dst[w..]` while `i < limit` (`s` must have a block's bytes at
/// each such `i`): each block is copied whole, then the copy is cut at its first backslash
/// and the escape there decoded over it. Escapes are recorded with `base` added to their
/// offsets in `s`. Returns the final `(i, w)`; every byte of `dst` below `w` is written.
#[inline(always)]
fn unescape_blocks<const AVX2: bool>(
    s: &[u8],
    mut i: usize,
    limit: usize,
    base: usize,
    dst: &mut [MaybeUninit<u8>],
    mut w: usize,
    escapes: &mut Vec<(usize, usize, usize)>,
) -> Option<(usize, usize)> {
    while i < limit {
        let blk: &[u8; BLOCK] = s[i..i + BLOCK].try_into().unwrap();
        let m = special_masks::<AVX2>(blk).1;
        for (d, &b) in dst[w..w + BLOCK].iter_mut().zip(blk) {
            *d = MaybeUninit::new(b);
        }
        if m == 0 {
            i += BLOCK;
            w += BLOCK;
            continue;
        }
        let k = m.trailing_zeros() as usize;
        let j = i + k;
        w += k;
        let c = *s.get(j + 1)?;
        match SIMPLE_ESCAPE[c as usize] {
            0 => (i, w) = unicode_escape(s, j, dst, w)?,
            b => {
                dst[w] = MaybeUninit::new(b);
                w += 1;
                i = j + 2;
            }
        }
        escapes.push((base + j, base + i, w));
    }
    Some((i, w))
}

/// Decodes the `\u` escape at `s[j]` (with its low surrogate if it is a high one) into
/// `dst[w..]`: the offsets after it in `s` and `dst`. `None` on anything else after the
/// backslash, bad hex digits or a lone surrogate.
#[inline(never)]
fn unicode_escape(
    s: &[u8],
    j: usize,
    dst: &mut [MaybeUninit<u8>],
    w: usize,
) -> Option<(usize, usize)> {
    if s.get(j + 1) != Some(&b'u') {
        return None;
    }
    let c = hex4(s.get(j + 2..j + 6)?)?;
    let (c, len) = if (0xD800..0xDC00).contains(&c) {
        if s.get(j + 6..j + 8) != Some(b"\\u") {
            return None;
        }
        let lo = hex4(s.get(j + 8..j + 12)?)?;
        if !(0xDC00..0xE000).contains(&lo) {
            return None;
        }
        (0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00), 12)
    } else {
        (c, 6)
    };
    let mut utf8 = [0u8; 4];
    let utf8 = char::from_u32(c)?.encode_utf8(&mut utf8).as_bytes();
    for (d, &b) in dst[w..w + utf8.len()].iter_mut().zip(utf8) {
        *d = MaybeUninit::new(b);
    }
    Some((j + len, w + utf8.len()))
}

/// For each byte after a backslash, the byte its two-byte escape stands for (0: not one).
static SIMPLE_ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t[b'/' as usize] = b'/';
    t[b'b' as usize] = 0x08;
    t[b'f' as usize] = 0x0c;
    t[b'n' as usize] = b'\n';
    t[b'r' as usize] = b'\r';
    t[b't' as usize] = b'\t';
    t
};

/// Hex digit values (0xff: not a hex digit).
static HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            c @ b'0'..=b'9' => c - b'0',
            c @ b'a'..=b'f' => c - b'a' + 10,
            c @ b'A'..=b'F' => c - b'A' + 10,
            _ => 0xff,
        };
        b += 1;
    }
    t
};

/// The value of four hex digits (`None` if one is not a hex digit).
fn hex4(h: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    let mut bad = 0u8;
    for &b in h {
        let d = HEX[b as usize];
        bad |= d;
        v = v << 4 | d as u32;
    }
    (bad < 16).then_some(v)
}

/// Bit masks of the `"` bytes and of the `\` bytes of a block (bit `k` for `blk[k]`), with
/// SSE2 (the x86_64 baseline), AVX2 if `AVX2` (only in code that checked for it), or scalar
/// code on other architectures.
#[inline(always)]
fn special_masks<const AVX2: bool>(blk: &[u8; BLOCK]) -> (u32, u32) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        if AVX2 {
            // SAFETY: `AVX2` is only set on paths entered after detecting AVX2.
            return unsafe { masks_avx2(blk) };
        }
        // SAFETY: SSE2 is part of the x86_64 baseline; both loads read 16 bytes inside `blk`.
        unsafe {
            let p = blk.as_ptr() as *const __m128i;
            let (v0, v1) = (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)));
            let (q, bs) = (_mm_set1_epi8(b'"' as i8), _mm_set1_epi8(b'\\' as i8));
            let mask = |v0, v1| _mm_movemask_epi8(v0) as u32 | (_mm_movemask_epi8(v1) as u32) << 16;
            (
                mask(_mm_cmpeq_epi8(v0, q), _mm_cmpeq_epi8(v1, q)),
                mask(_mm_cmpeq_epi8(v0, bs), _mm_cmpeq_epi8(v1, bs)),
            )
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let (mut q, mut bs) = (0u32, 0u32);
        for (k, &b) in blk.iter().enumerate() {
            q |= ((b == b'"') as u32) << k;
            bs |= ((b == b'\\') as u32) << k;
        }
        (q, bs)
    }
}

/// [`special_masks`] with one AVX2 vector.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn masks_avx2(blk: &[u8; BLOCK]) -> (u32, u32) {
    use std::arch::x86_64::*;
    // SAFETY: the load reads the 32 bytes of `blk`.
    let v = unsafe { _mm256_loadu_si256(blk.as_ptr() as *const __m256i) };
    let q = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'"' as i8));
    let bs = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\\' as i8));
    (
        _mm256_movemask_epi8(q) as u32,
        _mm256_movemask_epi8(bs) as u32,
    )
}

/// Length of the escape at `d[j]` (a backslash) as the tokenizer checks it: 2, or 6 for
/// `\uXXXX`; `None` if it is not a valid escape.
#[inline]
fn escape_len(d: &[u8], j: usize) -> Option<usize> {
    match *d.get(j + 1)? {
        b'u' => {
            hex4(d.get(j + 2..j + 6)?)?;
            Some(6)
        }
        c if SIMPLE_ESCAPE[c as usize] != 0 => Some(2),
        _ => None,
    }
}

/// How [`Tok::string`] finds the end of a string.
#[derive(Clone, Copy)]
enum Scan {
    /// Block scans with SSE2 (or scalar code off x86_64).
    Blocks,
    /// Block scans with AVX2 (only set when the CPU supports it).
    Avx2,
    /// One `memchr` per escape: the old scan, the tests' reference.
    #[cfg(test)]
    Reference,
}

struct Tok<'a> {
    d: &'a [u8],
    i: usize,
    out: Vec<JsonStr>,
    scan: Scan,
}

impl Tok<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.d.get(self.i) {
            self.i += 1;
        }
    }

    /// Parses a string starting at the opening quote; returns (start, end, escaped).
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        match self.scan {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Scan::Avx2` is set only when the CPU supports AVX2.
            Scan::Avx2 => unsafe { self.string_avx2() },
            #[cfg(test)]
            Scan::Reference => tests::old::string(self),
            _ => self.string_with::<false>(),
        }
    }

    /// [`Tok::string_with`] with AVX2 block scans.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn string_avx2(&mut self) -> Option<(usize, usize, bool)> {
        self.string_with::<true>()
    }

    /// [`Tok::string`], with block scans as [`special_masks`] does them for `AVX2`.
    #[inline(always)]
    fn string_with<const AVX2: bool>(&mut self) -> Option<(usize, usize, bool)> {
        debug_assert_eq!(self.d[self.i], b'"');
        let d = self.d;
        let start = self.i + 1;
        let mut j = start;
        let mut escaped = false;
        // Whole blocks: every `"` and `\` of a block from one mask, escapes skipped in it.
        'block: while j + BLOCK <= d.len() {
            let base = j;
            let (q, bs) = special_masks::<AVX2>(d[base..base + BLOCK].try_into().unwrap());
            let mut m = q | bs;
            j = base + BLOCK;
            while m != 0 {
                let k = m.trailing_zeros();
                let p = base + k as usize;
                if q >> k & 1 != 0 {
                    self.i = p + 1;
                    return Some((start, p, escaped));
                }
                escaped = true;
                let e = p + escape_len(d, p)?;
                if e >= base + BLOCK {
                    j = e;
                    continue 'block;
                }
                m &= u32::MAX << (e - base);
            }
        }
        // The last bytes of the document.
        loop {
            j += memchr::memchr2(b'"', b'\\', d.get(j..)?)?;
            if d[j] == b'"' {
                self.i = j + 1;
                return Some((start, j, escaped));
            }
            escaped = true;
            j += escape_len(d, j)?;
        }
    }

    fn value(&mut self, path: &mut String, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match *self.d.get(self.i)? {
            b'"' => {
                let (start, end, escaped) = self.string()?;
                self.out.push(JsonStr {
                    path: path.clone(),
                    start,
                    end,
                    escaped,
                    key: false,
                });
            }
            b'{' => {
                self.i += 1;
                self.ws();
                if self.d.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    if self.d.get(self.i) != Some(&b'"') {
                        return None;
                    }
                    let (start, end, escaped) = self.string()?;
                    let len = path.len();
                    path.push('.');
                    let raw = &self.d[start..end];
                    if escaped {
                        path.extend(String::from_utf8_lossy(&unescape(raw)?).chars().take(64));
                    } else if raw.len() <= 64 && raw.is_ascii() {
                        // The common key: its characters are its bytes.
                        path.push_str(std::str::from_utf8(raw).unwrap_or_default());
                    } else {
                        path.extend(String::from_utf8_lossy(raw).chars().take(64));
                    }
                    self.out.push(JsonStr {
                        path: path.clone(),
                        start,
                        end,
                        escaped,
                        key: true,
                    });
                    self.ws();
                    if self.d.get(self.i) != Some(&b':') {
                        return None;
                    }
                    self.i += 1;
                    self.ws();
                    self.value(path, depth + 1)?;
                    path.truncate(len);
                    self.ws();
                    match *self.d.get(self.i)? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.d.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Some(());
                }
                let mut n = 0usize;
                loop {
                    self.ws();
                    let len = path.len();
                    // Writing to a String cannot fail.
                    let _ = write!(path, "[{n}]");
                    self.value(path, depth + 1)?;
                    path.truncate(len);
                    n += 1;
                    self.ws();
                    match *self.d.get(self.i)? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b't' => self.lit(b"true")?,
            b'f' => self.lit(b"false")?,
            b'n' => self.lit(b"null")?,
            b'-' | b'0'..=b'9' => {
                let n = self.d[self.i..]
                    .iter()
                    .take_while(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .count();
                self.i += n;
            }
            _ => return None,
        }
        Some(())
    }

    fn lit(&mut self, word: &[u8]) -> Option<()> {
        if self.d[self.i..].starts_with(word) {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::Rng;

    /// The tokenizer and unescaper before the block-wise versions (one `memchr` per escape):
    /// the reference the property tests compare against.
    pub(super) mod old {
        use super::super::{JsonStr, Tok};

        /// The old tokenizer: the current one with the old string scan (`value` is unchanged).
        pub(in super::super) fn strings(data: &[u8], root: &str) -> Option<Vec<JsonStr>> {
            super::super::strings_scanned(data, root, super::super::Scan::Reference)
        }

        /// The old string scan: one `memchr2` per escape. Parses the string starting at the
        /// opening quote; returns (start, end, escaped).
        pub(in super::super) fn string(t: &mut Tok) -> Option<(usize, usize, bool)> {
            debug_assert_eq!(t.d[t.i], b'"');
            let start = t.i + 1;
            let mut j = start;
            let mut escaped = false;
            loop {
                j += memchr::memchr2(b'"', b'\\', &t.d[j..])?;
                if t.d[j] == b'"' {
                    t.i = j + 1;
                    return Some((start, j, escaped));
                }
                escaped = true;
                match *t.d.get(j + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                    b'u' => {
                        let h = t.d.get(j + 2..j + 6)?;
                        if !h.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        j += 6;
                    }
                    _ => return None,
                }
            }
        }

        /// [`unescape`], also recording every escape as `(raw start, raw end, end in the output)`
        /// in `escapes` (in order), so offsets can be mapped between `raw` and the result.
        pub(super) fn unescape_mapped(
            raw: &[u8],
            escapes: &mut Vec<(usize, usize, usize)>,
        ) -> Option<Vec<u8>> {
            let mut out = Vec::with_capacity(raw.len());
            let mut i = 0;
            while let Some(p) = memchr::memchr(b'\\', &raw[i..]) {
                out.extend_from_slice(&raw[i..i + p]);
                let j = i + p;
                let b = match *raw.get(j + 1)? {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        let mut c = hex4(raw.get(j + 2..j + 6)?)?;
                        i = j + 6;
                        if (0xD800..0xDC00).contains(&c) {
                            if raw.get(i..i + 2) != Some(b"\\u") {
                                return None;
                            }
                            let lo = hex4(raw.get(i + 2..i + 6)?)?;
                            if !(0xDC00..0xE000).contains(&lo) {
                                return None;
                            }
                            c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
                            i += 6;
                        } else if (0xDC00..0xE000).contains(&c) {
                            return None;
                        }
                        let ch = char::from_u32(c)?;
                        out.extend_from_slice(ch.encode_utf8(&mut [0u8; 4]).as_bytes());
                        escapes.push((j, i, out.len()));
                        continue;
                    }
                    _ => return None,
                };
                out.push(b);
                i = j + 2;
                escapes.push((j, i, out.len()));
            }
            out.extend_from_slice(&raw[i..]);
            Some(out)
        }

        fn hex4(h: &[u8]) -> Option<u32> {
            let mut v = 0u32;
            for &b in h {
                v = v << 4 | (b as char).to_digit(16)?;
            }
            Some(v)
        }
    }

    /// Appends a random piece of raw JSON string content, heavy in escapes; with `bad`, also
    /// invalid ones (bad escapes, lone surrogates, raw quotes, a trailing backslash).
    fn piece(rng: &mut Rng, out: &mut Vec<u8>, bad: bool) {
        const SIMPLE: &[u8] = b"\"\\/bfnrt";
        let hex = |rng: &mut Rng, c: u32| {
            let s = format!("\\u{c:04x}");
            if rng.below(2) == 0 {
                s
            } else {
                s.to_uppercase().replace("\\U", "\\u")
            }
        };
        match rng.below(if bad { 17 } else { 12 }) {
            0..=2 => {
                for _ in 0..rng.below(40) {
                    let b = 0x20 + rng.below(0x5f) as u8;
                    out.push(if b == b'"' || b == b'\\' { b'x' } else { b });
                }
            }
            3..=6 => out.extend_from_slice(&[b'\\', SIMPLE[rng.below(SIMPLE.len())]]),
            7 => {
                let c = loop {
                    let c = rng.below(0x10000) as u32;
                    if !(0xD800..0xE000).contains(&c) {
                        break c;
                    }
                };
                let c = if rng.below(2) == 0 { c & 0x7f } else { c };
                out.extend_from_slice(hex(rng, c).as_bytes());
            }
            8 => {
                let (hi, lo) = (0xD800 + rng.below(0x400), 0xDC00 + rng.below(0x400));
                out.extend_from_slice(hex(rng, hi as u32).as_bytes());
                out.extend_from_slice(hex(rng, lo as u32).as_bytes());
            }
            9 => {
                let c = char::from_u32(0x80 + rng.below(0x2000) as u32).unwrap_or('é');
                out.extend_from_slice(c.to_string().as_bytes());
                if rng.below(4) == 0 {
                    out.push(0x80 + rng.below(0x80) as u8);
                }
            }
            10 => out.push(rng.below(0x20) as u8),
            11 => out.extend_from_slice(b"\\n"),
            12 => {
                let s: &[u8] = match rng.below(5) {
                    0 => b"\\ud800",
                    1 => b"\\udfff",
                    2 => b"\\ud83d\\u0041",
                    3 => b"\\ud83d\\n",
                    _ => b"\\uDBFF\\uDC0",
                };
                out.extend_from_slice(s);
            }
            13 => {
                let b = loop {
                    let b = rng.next_u64() as u8;
                    if !SIMPLE.contains(&b) && b != b'u' {
                        break b;
                    }
                };
                out.extend_from_slice(&[b'\\', b]);
            }
            14 => {
                let c = rng.below(0x10000) as u32;
                let mut h = hex(rng, c).into_bytes();
                let k = 2 + rng.below(4);
                h[k] = b"gG \"\\\x00\xff"[rng.below(7)];
                out.extend_from_slice(&h);
            }
            15 => out.push(b'"'),
            _ => out.push(b'\\'),
        }
    }

    fn raw_string(rng: &mut Rng, max_pieces: usize, bad: bool) -> Vec<u8> {
        let mut s = Vec::new();
        for _ in 0..rng.below(max_pieces + 1) {
            piece(rng, &mut s, bad);
        }
        s
    }

    /// `unescape_mapped` gives the reference's bytes and escape map on random escape-heavy
    /// strings and on every prefix of them (escapes cut at every position).
    #[test]
    fn unescape_matches_reference() {
        let mut rng = Rng::new(77);
        let (mut e_new, mut e_old) = (vec![(1, 2, 3)], vec![(1, 2, 3)]);
        let mut check = |raw: &[u8]| {
            e_old.truncate(1);
            let want = old::unescape_mapped(raw, &mut e_old);
            for avx2 in [false, true] {
                e_new.truncate(1);
                let got = unescape_mapped_with(raw, &mut e_new, avx2);
                assert_eq!(got, want, "{:?}", String::from_utf8_lossy(raw));
                assert_eq!(e_new, e_old, "{:?}", String::from_utf8_lossy(raw));
            }
            assert_eq!(unescape(raw), want);
            want.is_some()
        };
        let mut ok = 0;
        for round in 0..3000 {
            let raw = raw_string(&mut rng, 1 + round % 60, round % 3 == 0);
            ok += check(&raw) as usize;
            if round % 4 == 0 {
                for k in 0..raw.len() {
                    check(&raw[..k]);
                    check(&raw[k..]);
                }
            }
        }
        assert!(ok > 1500, "only {ok} valid strings");
    }

    /// Appends a random JSON value (random whitespace, escape-heavy strings; with `bad`, some
    /// invalid strings).
    fn value(rng: &mut Rng, out: &mut Vec<u8>, depth: usize, bad: bool) {
        let ws = |rng: &mut Rng, out: &mut Vec<u8>| {
            for _ in 0..[0, 0, 1, 3][rng.below(4)] {
                out.push(b" \t\n\r"[rng.below(4)]);
            }
        };
        ws(rng, out);
        match rng.below(if depth == 0 { 4 } else { 7 }) {
            0 | 1 => {
                out.push(b'"');
                let max = [3, 12, 80][rng.below(3)];
                out.extend_from_slice(&raw_string(rng, max, bad));
                out.push(b'"');
            }
            2 => out.extend_from_slice(b"-12.5e3"),
            3 => out.extend_from_slice([&b"true"[..], b"false", b"null"][rng.below(3)]),
            4 | 5 => {
                out.push(b'{');
                for k in 0..rng.below(5) {
                    if k > 0 {
                        out.push(b',');
                    }
                    ws(rng, out);
                    out.push(b'"');
                    out.extend_from_slice(&raw_string(rng, 4, bad));
                    out.push(b'"');
                    ws(rng, out);
                    out.push(b':');
                    value(rng, out, depth - 1, bad);
                }
                ws(rng, out);
                out.push(b'}');
            }
            _ => {
                out.push(b'[');
                for k in 0..rng.below(5) {
                    if k > 0 {
                        out.push(b',');
                    }
                    value(rng, out, depth - 1, bad);
                }
                ws(rng, out);
                out.push(b']');
            }
        }
        ws(rng, out);
    }

    /// `strings` gives the reference tokenizer's result (the same strings, or `None`) on random
    /// JSON documents, valid and broken (bad strings, truncated, a byte deleted or inserted).
    #[test]
    fn tokenizer_matches_reference() {
        let mut rng = Rng::new(78);
        let mut valid = 0;
        for round in 0..4000 {
            let mut doc = Vec::new();
            value(&mut rng, &mut doc, 4, round % 5 == 0);
            match rng.below(6) {
                0 => doc.truncate(rng.below(doc.len() + 1)),
                1 if !doc.is_empty() => {
                    doc.remove(rng.below(doc.len()));
                }
                2 => {
                    let b = b"{}[]:,\"\\ 0tu"[rng.below(12)];
                    doc.insert(rng.below(doc.len() + 1), b);
                }
                _ => {}
            }
            let root = ["", "gzip:"][rng.below(2)];
            let want = old::strings(&doc, root);
            valid += want.is_some() as usize;
            assert_eq!(
                strings(&doc, root),
                want,
                "{:?}",
                String::from_utf8_lossy(&doc)
            );
            // Every cut of a small document (strings ending in the last block).
            if doc.len() < 200 && round % 8 == 0 {
                for k in 0..doc.len() {
                    let want = old::strings(&doc[..k], root);
                    assert_eq!(strings(&doc[..k], root), want);
                    assert_eq!(strings_with(&doc[..k], root, false), want);
                }
            }
        }
        assert!(valid > 1500, "only {valid} valid documents");
        let deep = [vec![b'['; 129], vec![b']'; 129]].concat();
        assert_eq!(strings(&deep, ""), old::strings(&deep, ""));
        let deeper = [vec![b'['; 130], vec![b']'; 130]].concat();
        assert_eq!(strings(&deeper, ""), None);
    }
}
