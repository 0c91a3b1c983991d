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

#[inline(always)]
fn pair_index(x: u64) -> usize {
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
                let x = u16::from_le_bytes([k[end - 1], k[end]]) as u64;
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
    pub(crate) fn find(&self, data: &[u8], mut f: impl FnMut(usize, usize, usize)) {
        let n = data.len();
        if n < 2 {
            return;
        }
        let mut carry = 0u64;
        // Block of end positions p..p + 8 reads the pairs ending there: data[p - 1..p + 8].
        let mut p = 1;
        while p + 11 <= n {
            let a = u64::from_le_bytes(data[p - 1..p + 7].try_into().expect("8 bytes"));
            let b = u64::from_le_bytes(data[p + 3..p + 11].try_into().expect("8 bytes"));
            let lo = self.block(a, b, &mut carry);
            if lo != !0 {
                self.confirm(data, p, lo, &mut f);
            }
            p += 8;
        }
        // Tail (< 11 bytes from p - 1): the same on a zero-padded copy; candidates past the end
        // are dropped by `confirm`.
        let mut buf = [0u8; 24];
        let rest = &data[p - 1..];
        buf[..rest.len()].copy_from_slice(rest);
        let mut q = 0;
        while p + q < n {
            let a = u64::from_le_bytes(buf[q..q + 8].try_into().expect("8 bytes"));
            let b = u64::from_le_bytes(buf[q + 4..q + 12].try_into().expect("8 bytes"));
            let lo = self.block(a, b, &mut carry);
            if lo != !0 {
                self.confirm(data, p + q, lo, &mut f);
            }
            q += 8;
        }
    }

    /// The candidate bytes of 8 end positions. `a` holds the bytes ending at positions 0..4
    /// (and the byte before), `b` the bytes from position 3 on.
    #[inline(always)]
    fn block(&self, a: u64, b: u64, carry: &mut u64) -> u64 {
        let r = &self.reach;
        let r0 = r[pair_index(a)];
        let r1 = r[pair_index(a >> 8)];
        let r2 = r[pair_index(a >> 16)];
        let r3 = r[pair_index(a >> 24)];
        let r4 = r[pair_index(b)];
        let r5 = r[pair_index(b >> 8)];
        let r6 = r[pair_index(b >> 16)];
        let r7 = r[pair_index(b >> 24)];
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
            let mut got = Vec::new();
            self.0.find(data, |k, s, e| got.push((k, s, e)));
            assert!(got.windows(2).all(|w| w[0].2 <= w[1].2), "ordered by end");
            want.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, want);
            got.len()
        }
    }

    fn default_keywords() -> Vec<Vec<u8>> {
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
            Both::new(&ks2).check(&d);
        }
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
