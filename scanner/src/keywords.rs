//! Rule keyword search: every ASCII-case-insensitive occurrence of every keyword, overlapping
//! (the hits of an `aho_corasick` `MatchKind::Standard` overlapping search), found with an
//! FDR-style (Hyperscan) hashed shift-or filter and exact verification.
//!
//! * Keywords go into 8 buckets by length (2, 3, ..., 8, >= 9 bytes); a keyword is filtered on
//!   its last `min(len, 9)` bytes, i.e. on up to 8 consecutive byte pairs.
//! * A byte pair is looked up with bits 5 and 7 of both bytes cleared (`& 0x5f5f`), so the two
//!   ASCII cases of a letter share an entry. Entry `reach[pair]` is a `u64`: bit `8 d + b` is
//!   clear when the pair can end `d` bytes before the last byte of a bucket-`b` keyword (or when
//!   bucket `b` has keywords shorter than `d + 2` bytes: don't care).
//! * For 8 input positions at a time, the entries are OR-ed together shifted by their position:
//!   byte `m` of the result is the OR over `d` of the entry of the pair ending at `m - d`, so a
//!   clear bit `b` there means every pair of some bucket-`b` keyword ending at `m` may be present
//!   (an exact superset of the real occurrences). The bytes that belong to the next 8 positions
//!   are carried over. There are no loop-carried dependencies except the carry.
//! * Each candidate (end position, bucket) is verified against the bucket's keywords (last two
//!   bytes first, then the whole keyword, case-insensitively).
//!
//! Also measured and dropped: short keywords (2-4 bytes) in 16 buckets by a Teddy-style pass
//! (`vpermi2b` on 128-entry byte tables, 4 positions, 64 ends per step) and long ones (>= 5
//! bytes) by the reach table looked up only at pairs ending at even positions (each such keyword
//! keeps >= 2 looked-up pairs at either parity of its end), both verified per 64-byte chunk in
//! order of end: exact, ~2.7 instructions/byte against ~7, but `keywords::bench` gave 1.66-2.59
//! GB/s against SSE2's 1.79-2.75 (3 runs x 3 rounds, alternated), so the lookups, not the
//! instruction count, bound this loop. (LLVM turns such lookups into slow `vpgatherqq`s unless
//! the entries go through SIMD registers.)
//!
//! Measured and dropped on Zen 4 (AVX-512; `keywords::bench`, 64 MB of C headers and Python,
//! SSE2 path 1.7-2.9 GB/s): 64 positions per step
//! with one `vpgatherqq` per position-in-block (transposed so every lane shifts alike),
//! 1.1-1.65 GB/s (gathers are slow there); the same with scalar loads assembled into `zmm`
//! lanes, 1.26-1.48 GB/s; the input folded (`& 0x5f`) by SIMD into a stack buffer first,
//! 1.54-2.16 GB/s. Stride 2 (pairs ending at even positions only) raises the candidate
//! blocks from 0.19 % to 13 % (4-byte keywords at odd ends are left with their middle pair).

use std::fmt;

/// Entries of the reach table: every value of `pair & 0x5f5f` is below this.
const TABLE_LEN: usize = 0x6000;
/// Keywords are filtered on at most this many byte pairs (one byte of a `u64` entry each).
const MAX_PAIRS: usize = 8;

#[derive(Clone)]
pub(crate) struct KeywordSearch {
    reach: Box<[u64; TABLE_LEN]>,
    /// Per bucket: (last two bytes, lower-case, as a little-endian u16; keyword index).
    buckets: [Vec<(u16, usize)>; 8],
    /// Lower-case keywords.
    keywords: Vec<Vec<u8>>,
}

impl fmt::Debug for KeywordSearch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeywordSearch")
            .field("keywords", &self.keywords.len())
            .finish_non_exhaustive()
    }
}

/// The carry into the first block (end positions 1..9): byte `m` has bit `b` set for every
/// bucket `b > m`, whose keywords (at least `b + 2` bytes) cannot end at position `m + 1`
/// (they would start before the input; the verification's bounds check drops exactly these
/// candidates). The pairs before the input of shorter buckets are don't-care (clear).
const FIRST_CARRY: u64 = 0x0080_C0E0_F0F8_FCFE;

#[inline(always)]
fn pair_index(x: u16) -> usize {
    (x & 0x5f5f) as usize
}

impl KeywordSearch {
    /// `keywords` must be at least 2 bytes long; they are matched ignoring ASCII case.
    pub(crate) fn new(keywords: &[Vec<u8>]) -> KeywordSearch {
        let mut reach: Box<[u64; TABLE_LEN]> = vec![!0u64; TABLE_LEN]
            .into_boxed_slice()
            .try_into()
            .expect("table length");
        let mut buckets: [Vec<(u16, usize)>; 8] = Default::default();
        let mut min_pairs = [MAX_PAIRS; 8];
        let keywords: Vec<Vec<u8>> = keywords.iter().map(|k| k.to_ascii_lowercase()).collect();
        for (i, k) in keywords.iter().enumerate() {
            assert!(k.len() >= 2, "keywords are at least 2 bytes");
            let pairs = (k.len() - 1).min(MAX_PAIRS);
            let bucket = pairs - 1;
            min_pairs[bucket] = min_pairs[bucket].min(pairs);
            for d in 0..pairs {
                let end = k.len() - 1 - d;
                let x = u16::from_le_bytes([k[end - 1], k[end]]);
                reach[pair_index(x)] &= !(1u64 << (8 * d + bucket));
            }
            let n = k.len();
            buckets[bucket].push((u16::from_le_bytes([k[n - 2], k[n - 1]]), i));
        }
        for (bucket, &pairs) in min_pairs.iter().enumerate() {
            for d in pairs..MAX_PAIRS {
                let dont_care = !(1u64 << (8 * d + bucket));
                reach.iter_mut().for_each(|r| *r &= dont_care);
            }
        }
        KeywordSearch {
            reach,
            buckets,
            keywords,
        }
    }

    /// Calls `f(keyword index, start, end)` for every occurrence, in order of `end`.
    pub(crate) fn find(&self, data: &[u8], f: impl FnMut(usize, usize, usize)) {
        // SAFETY: SSE2 is part of the x86_64 baseline: every x86_64 CPU has it.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            self.find_sse2(data, f)
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.find_with(data, f, FIRST_CARRY, |w, c| self.block_u64(w, c))
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse2")]
    fn find_sse2(&self, data: &[u8], f: impl FnMut(usize, usize, usize)) {
        self.find_with(data, f, FIRST_CARRY, |w, c| self.block_sse2(w, c))
    }

    /// The search loop around `block(bytes from position - 1 on, &mut carry)` (see
    /// `block_u64`); the carry starts as [`FIRST_CARRY`].
    #[inline(always)]
    fn find_with<C>(
        &self,
        data: &[u8],
        mut f: impl FnMut(usize, usize, usize),
        mut carry: C,
        block: impl Fn(&[u8; 9], &mut C) -> u64,
    ) {
        let n = data.len();
        if n < 2 {
            return;
        }
        // Block of end positions p..p + 8 reads the pairs ending there: data[p - 1..p + 8].
        let mut p = 1;
        while p + 8 <= n {
            let lo = block(data[p - 1..p + 8].try_into().expect("9 bytes"), &mut carry);
            if lo != !0 {
                self.confirm(data, p, lo, &mut f);
            }
            p += 8;
        }
        // Tail (< 9 bytes from p - 1): the same on a zero-padded copy; candidates past the end
        // are dropped by `confirm`.
        let mut buf = [0u8; 17];
        let rest = &data[p - 1..];
        buf[..rest.len()].copy_from_slice(rest);
        let mut q = 0;
        while p + q < n {
            let lo = block(buf[q..q + 9].try_into().expect("9 bytes"), &mut carry);
            if lo != !0 {
                self.confirm(data, p + q, lo, &mut f);
            }
            q += 8;
        }
    }

    /// The reach entries of the 8 pairs ending at positions 0..8 of a block; `w` holds the
    /// input bytes from position -1 on.
    #[inline(always)]
    fn entries(&self, w: &[u8; 9]) -> [u64; 8] {
        std::array::from_fn(|i| self.reach[pair_index(u16::from_le_bytes([w[i], w[i + 1]]))])
    }

    /// `block_u64` with a 128-bit SSE2 accumulator: one load, one byte shift
    /// and one OR per entry. The carry stays a `u64` OR-ed in after the accumulator: in a
    /// general-purpose register it is not spilled around the (cold) `confirm` call, as an
    /// `__m128i` carry was once the search loop got inlined into a larger caller (that
    /// store/reload in the loop-carried chain cost ~30 % of the rule pass).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse2")]
    #[inline]
    fn block_sse2(&self, w: &[u8; 9], carry: &mut u64) -> u64 {
        use std::arch::x86_64::{
            _mm_cvtsi128_si64, _mm_cvtsi64_si128, _mm_or_si128, _mm_slli_si128, _mm_srli_si128,
        };
        let r = self.entries(w).map(|e| _mm_cvtsi64_si128(e as i64));
        let x01 = _mm_or_si128(r[0], _mm_slli_si128::<1>(r[1]));
        let x23 = _mm_or_si128(_mm_slli_si128::<2>(r[2]), _mm_slli_si128::<3>(r[3]));
        let x45 = _mm_or_si128(_mm_slli_si128::<4>(r[4]), _mm_slli_si128::<5>(r[5]));
        let x67 = _mm_or_si128(_mm_slli_si128::<6>(r[6]), _mm_slli_si128::<7>(r[7]));
        let acc = _mm_or_si128(_mm_or_si128(x01, x23), _mm_or_si128(x45, x67));
        let lo = _mm_cvtsi128_si64(acc) as u64 | *carry;
        *carry = _mm_cvtsi128_si64(_mm_srli_si128::<8>(acc)) as u64;
        lo
    }

    /// The candidate bytes of a block's 8 end positions (see [`KeywordSearch::entries`]):
    /// entry `i` OR-ed in shifted left by `i` bytes into a 128-bit accumulator that starts as
    /// the previous block's carry; the low half is returned, the high half is the new carry.
    #[cfg(any(test, not(target_arch = "x86_64")))]
    #[inline(always)]
    fn block_u64(&self, w: &[u8; 9], carry: &mut u64) -> u64 {
        let [r0, r1, r2, r3, r4, r5, r6, r7] = self.entries(w);
        let lo = (*carry | r0 | r1 << 8 | r2 << 16 | r3 << 24)
            | (r4 << 32 | r5 << 40 | r6 << 48 | r7 << 56);
        *carry = (r1 >> 56 | r2 >> 48 | r3 >> 40 | r4 >> 32) | (r5 >> 24 | r6 >> 16 | r7 >> 8);
        lo
    }

    /// Verifies the clear bits of `lo` (byte m: end position `p + m`, bit b: bucket b).
    #[cold]
    #[inline(never)]
    fn confirm(&self, data: &[u8], p: usize, lo: u64, f: &mut impl FnMut(usize, usize, usize)) {
        let mut m = !lo;
        while m != 0 {
            let bit = m.trailing_zeros() as usize;
            m &= m - 1;
            let last = p + bit / 8;
            if last >= data.len() {
                break;
            }
            let tail = u16::from_le_bytes([
                data[last - 1].to_ascii_lowercase(),
                data[last].to_ascii_lowercase(),
            ]);
            for &(t, ki) in &self.buckets[bit % 8] {
                if t != tail {
                    continue;
                }
                let k = &self.keywords[ki];
                let end = last + 1;
                if end >= k.len() && data[end - k.len()..end].eq_ignore_ascii_case(k) {
                    f(ki, end - k.len(), end);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

    /// The keyword search and the plain automaton it must agree with.
    struct Both(KeywordSearch, AhoCorasick);

    impl Both {
        fn new(keywords: &[Vec<u8>]) -> Both {
            let ac = AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .kind(Some(AhoCorasickKind::DFA))
                .build(keywords)
                .unwrap();
            Both(KeywordSearch::new(keywords), ac)
        }

        /// Asserts the same hits; returns their number.
        fn check(&self, data: &[u8]) -> usize {
            let mut want: Vec<(usize, usize, usize)> = self
                .1
                .find_overlapping_iter(data)
                .map(|m| (m.pattern().as_usize(), m.start(), m.end()))
                .collect();
            want.sort_unstable();
            let mut n = 0;
            for (path, mut got) in all_paths(&self.0, data) {
                assert!(
                    got.windows(2).all(|w| w[0].2 <= w[1].2),
                    "{path}: ordered by end"
                );
                got.sort_unstable();
                assert_eq!(got, want, "{path}");
                n = got.len();
            }
            n
        }
    }

    type Hits = Vec<(usize, usize, usize)>;
    type Search<'a> = dyn Fn(&[u8], &mut dyn FnMut(usize, usize, usize)) + 'a;

    /// `find` and every search path this CPU can run, each named.
    fn paths(ks: &KeywordSearch) -> Vec<(&'static str, Box<Search<'_>>)> {
        let mut out: Vec<(&'static str, Box<Search<'_>>)> = vec![
            ("find", Box::new(|d, f| ks.find(d, f))),
            (
                "u64",
                Box::new(|d, f| ks.find_with(d, f, FIRST_CARRY, |w, c| ks.block_u64(w, c))),
            ),
        ];
        // SAFETY: SSE2 is part of the x86_64 baseline.
        #[cfg(target_arch = "x86_64")]
        out.push(("sse2", Box::new(|d, f| unsafe { ks.find_sse2(d, f) })));
        out
    }

    /// The hits of every path in [`paths`] on `data`.
    fn all_paths(ks: &KeywordSearch, data: &[u8]) -> Vec<(&'static str, Hits)> {
        paths(ks)
            .into_iter()
            .map(|(name, search)| {
                let mut got = Vec::new();
                search(data, &mut |k, s, e| got.push((k, s, e)));
                (name, got)
            })
            .collect()
    }

    /// Every path in [`paths`] over all of `files`: (path, seconds, hits).
    pub(super) fn time_paths(
        ks: &KeywordSearch,
        files: &[Vec<u8>],
    ) -> Vec<(&'static str, f64, usize)> {
        paths(ks)
            .into_iter()
            .map(|(name, search)| {
                let t = std::time::Instant::now();
                let mut hits = 0;
                for d in files {
                    search(d, &mut |_, _, _| hits += 1);
                }
                (name, t.elapsed().as_secs_f64(), hits)
            })
            .collect()
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_block_equals_u64_block() {
        let ks = KeywordSearch::new(&default_keywords());
        let mut rng = crate::corpus::Rng::new(9);
        // SAFETY (all unsafe blocks here): SSE2 is part of the x86_64 baseline.
        let (mut c128, mut c64) = (0u64, 0u64);
        let text = crate::corpus::planted_corpus(2, 200).0.into_bytes();
        for i in 0..20_000 {
            let w: [u8; 9] = if i % 2 == 0 {
                std::array::from_fn(|_| rng.next_u64() as u8)
            } else {
                let p = rng.below(text.len() - 9);
                text[p..p + 9].try_into().unwrap()
            };
            let lo = unsafe { ks.block_sse2(&w, &mut c128) };
            assert_eq!(lo, ks.block_u64(&w, &mut c64));
            assert_eq!(c128, c64);
        }
    }

    pub(super) fn default_keywords() -> Vec<Vec<u8>> {
        let rules = crate::rules::parse_rules(
            crate::rules::DEFAULT_RULES_TOML,
            crate::rules::DEFAULT_RULES_NAME,
            true,
        )
        .unwrap();
        let mut ks: Vec<Vec<u8>> = rules
            .iter()
            .flat_map(|r| {
                r.keywords
                    .iter()
                    .map(|k| k.to_ascii_lowercase().into_bytes())
            })
            .collect();
        ks.sort();
        ks.dedup();
        ks
    }

    #[test]
    fn same_hits_as_aho_corasick_on_generated_and_random_data() {
        let ks = default_keywords();
        let both = Both::new(&ks);
        let mut rng = crate::corpus::Rng::new(7);
        // Keywords at every buffer start/end offset, mixed case, overlapping.
        let mut total = 0;
        for k in &ks {
            for pre in 0..10 {
                for post in 0..10 {
                    let mut d = vec![b'x'; pre];
                    for (i, &c) in k.iter().enumerate() {
                        d.push(if i % 2 == 0 {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        });
                    }
                    d.extend(std::iter::repeat_n(b'_', post));
                    total += both.check(&d);
                }
            }
        }
        assert!(total >= ks.len() * 100);
        let overlapping =
            b"xoxe.xoxb-sk-ant-api03-ghp_ghp_GHP_sk_live_sk_test_begin private key-----";
        assert!(both.check(overlapping) >= 8);
        // Generated credentials (the planted corpus) and random bytes drawn from keyword
        // alphabets.
        let mut corpus = crate::corpus::planted_corpus(1, 351).0.into_bytes();
        for s in crate::corpus::samples() {
            corpus.extend(s.negative(&mut rng).bytes());
        }
        assert!(both.check(&corpus) > 351);
        let alphabet: Vec<u8> = ks
            .iter()
            .flatten()
            .copied()
            .chain(*b"AZ \n\x7f\xdf")
            .collect();
        for len in [0, 1, 2, 3, 7, 8, 9, 10, 11, 12, 17, 100, 4096] {
            for _ in 0..20 {
                let d: Vec<u8> = (0..len)
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect();
                both.check(&d);
            }
        }
        // Arbitrary keyword sets, including non-ASCII bytes and keywords that are suffixes
        // of each other.
        for round in 0..50 {
            let nk = 1 + rng.below(40);
            let ks: Vec<Vec<u8>> = (0..nk)
                .map(|_| {
                    let l = 2 + rng.below(14);
                    (0..l).map(|_| b"abAB_-\xc3\x20"[rng.below(8)]).collect()
                })
                .collect();
            let mut ks2 = ks.clone();
            ks2.sort();
            ks2.dedup();
            let d: Vec<u8> = (0..2000 + round)
                .map(|_| b"abAB_-\xc3\x20\xe3"[rng.below(9)])
                .collect();
            let both = Both::new(&ks2);
            both.check(&d);
            // Short inputs that start (or end) with a keyword or part of one: the first
            // block's carry (`FIRST_CARRY`) must not drop hits near the start.
            for _ in 0..200 {
                let k = &ks2[rng.below(ks2.len())];
                let mut d: Vec<u8> = k[rng.below(k.len())..].to_vec();
                d.extend_from_slice(&ks2[rng.below(ks2.len())]);
                d.truncate(rng.below(d.len() + 1));
                both.check(&d);
                d.insert(0, b'a');
                both.check(&d);
            }
        }
    }

    #[test]
    fn first_carry_marks_buckets_longer_than_the_prefix() {
        let mut want = 0u64;
        for m in 0..8 {
            for b in m + 1..8 {
                want |= 1 << (8 * m + b);
            }
        }
        assert_eq!(FIRST_CARRY, want);
    }

    #[test]
    fn same_hits_as_aho_corasick_on_real_code() {
        let both = Both::new(&default_keywords());
        let mut seen = 0;
        let mut hits = 0;
        for dir in [
            "/usr/include",
            "/usr/lib/python3.11",
            env!("CARGO_MANIFEST_DIR"),
        ] {
            for e in ignore::WalkBuilder::new(dir)
                .standard_filters(false)
                .sort_by_file_path(|a, b| a.cmp(b))
                .build()
                .flatten()
            {
                if seen > 20 << 20 {
                    break;
                }
                if e.file_type().is_some_and(|t| t.is_file()) {
                    if let Ok(d) = std::fs::read(e.path()) {
                        seen += d.len();
                        hits += both.check(&d);
                    }
                }
            }
        }
        assert!(seen > 100_000, "real code read: {seen} bytes");
        assert!(hits > 0);
    }
}

/// Timing of every search path over real text (MB/s per path, 3 rounds):
/// `cargo test --release -p bottle-scanner keywords::bench -- --ignored --nocapture`;
/// `KW_BENCH_MB` caps the corpus (default 64), `KW_BENCH_DIRS` is a `:`-separated list of
/// directories (default `/usr/include:/usr/lib/python3.11`).
#[cfg(test)]
mod bench {
    use super::tests::{default_keywords, time_paths};

    #[test]
    #[ignore = "timing, not a test"]
    fn bench() {
        let cap: usize = std::env::var("KW_BENCH_MB").map_or(64, |v| v.parse().unwrap()) << 20;
        let dirs = std::env::var("KW_BENCH_DIRS")
            .unwrap_or_else(|_| "/usr/include:/usr/lib/python3.11".into());
        let (mut files, mut seen) = (Vec::new(), 0);
        for dir in dirs.split(':') {
            for e in ignore::WalkBuilder::new(dir)
                .standard_filters(false)
                .sort_by_file_path(|a, b| a.cmp(b))
                .build()
                .flatten()
            {
                if seen < cap && e.file_type().is_some_and(|t| t.is_file()) {
                    if let Ok(d) = std::fs::read(e.path()) {
                        seen += d.len();
                        files.push(d);
                    }
                }
            }
        }
        let ks = super::KeywordSearch::new(&default_keywords());
        for round in 0..3 {
            for (name, secs, hits) in time_paths(&ks, &files) {
                let mbs = seen as f64 / 1e6 / secs;
                println!("round {round} {name:5} {mbs:6.0} MB/s {hits} hits ({seen} bytes)");
            }
        }
    }
}
