//! Host-name DLP: secrets smuggled out in DNS names (`CONNECT <base32(secret)>.evil.test:443`).
//!
//! The proxy calls [`scan_host`] on CONNECT hosts, absolute-form request hosts and TLS SNI
//! *before* it resolves the name, because the DNS query itself is the leak.

use super::codec::{scan_decoded_append, Codec};
use crate::rules::shannon_entropy;
use crate::{Finding, Scanner};

/// The decoders tried on every candidate (joined run of labels).
const CODECS: [Codec; 5] = [
    Codec::Base32,
    Codec::Base32Hex,
    Codec::Hex,
    Codec::Base64,
    Codec::Base64Url,
];

/// At most this many contiguous runs of labels are tried per host. A DNS name has at most 127
/// labels (8 128 runs); when a name has more runs than this, only the shortest runs are tried,
/// up to this count, plus every run that reaches the last label before the TLD.
pub const MAX_HOST_RUNS: usize = 512;

/// Hosts longer than this (DNS allows 253 bytes) are scanned raw only, then truncated for
/// the label runs.
const MAX_HOST_LEN: usize = 255;

/// Scans a host name (`name`, `name:port`, `name.`, `[v6]:port`) for secrets; every finding has
/// location `host`. Scans the raw name, then every contiguous run of labels left of the TLD
/// (bounded by [`MAX_HOST_RUNS`]) joined with no separator — raw, and decoded as base32,
/// base32hex (either case, unpadded), hex, base64 and base64url (unpadded; each decoding the
/// longest prefix of its alphabet) — with the known-secret pass and the rule set. Decoded
/// bytes that are not text are checked for known secrets only. Known-secret findings from
/// decoded runs carry the decoder's name in `encoding`. One finding per rule / known secret.
///
/// Call it before any DNS lookup of the name; block the request on any finding.
pub fn scan_host(scanner: &Scanner, host: &str) -> Vec<Finding> {
    let name = strip_port(host);
    let mut out = Vec::new();
    scanner.scan_append(name.as_bytes(), &mut out);
    if name.parse::<std::net::IpAddr>().is_err() {
        let name = &name.as_bytes()[..name.len().min(MAX_HOST_LEN)];
        let labels: Vec<&[u8]> = name.split(|&b| b == b'.').collect();
        // Every label but the TLD: a superset of the labels left of the registrable domain,
        // so no public-suffix list is needed.
        let labels = &labels[..labels.len().saturating_sub(1).max(1)];
        let mut joined = Vec::with_capacity(name.len());
        let mut stripped = Vec::with_capacity(name.len());
        let mut buf = Vec::with_capacity(name.len());
        for (i, j) in runs(labels.len()) {
            joined.clear();
            for l in &labels[i..=j] {
                joined.extend_from_slice(l);
            }
            if joined.is_empty() {
                continue;
            }
            if j > i {
                // Single labels are in the raw name already.
                scanner.scan_append(&joined, &mut out);
            }
            for codec in CODECS {
                scan_decoded_append(scanner, codec, &joined, &mut buf, &mut out);
            }
            // Hyphens the attacker inserted (DNS allows them, no alphabet but base64url has
            // them).
            if joined.contains(&b'-') {
                stripped.clear();
                stripped.extend(joined.iter().copied().filter(|&b| b != b'-'));
                scanner.scan_append(&stripped, &mut out);
                for codec in CODECS {
                    scan_decoded_append(scanner, codec, &stripped, &mut buf, &mut out);
                }
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|f| seen.insert((f.rule_id.clone(), f.known_secret.clone())));
    for f in &mut out {
        f.location = Some("host".to_string());
    }
    out
}

/// The label runs `(first, last)` tried for `n` labels: all of them when there are at most
/// [`MAX_HOST_RUNS`], else the shortest ones up to that count plus every run ending at the
/// last label.
fn runs(n: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    'len: for len in 1..=n {
        for i in 0..=n - len {
            if out.len() >= MAX_HOST_RUNS {
                break 'len;
            }
            out.push((i, i + len - 1));
        }
    }
    if n * (n + 1) / 2 > MAX_HOST_RUNS {
        for i in 0..n {
            if !out.contains(&(i, n - 1)) {
                out.push((i, n - 1));
            }
        }
    }
    out
}

/// `host` without a trailing `:port`, brackets around an IPv6 literal or a trailing dot.
fn strip_port(host: &str) -> &str {
    let h = host.trim();
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    let h = match h.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => h,
    };
    h.strip_suffix('.').unwrap_or(h)
}

/// Shape of a host name's labels, for a per-route cap on names that look like encoded data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelStats {
    /// Number of labels (`a.b.example.com` has 4).
    pub labels: usize,
    /// Length in bytes of the longest label.
    pub max_label_len: usize,
    /// Highest Shannon entropy, in bits per character, of any label (compared
    /// case-insensitively, as DNS does). Ordinary names stay below ~3.6; a 32-character label
    /// of random base32 is typically 4.3–4.8 (the maximum of a label of `n` distinct
    /// characters is `log2(n)`).
    pub max_label_entropy: f64,
    /// Total length of all labels left of the TLD (what a run of labels can carry).
    pub payload_len: usize,
}

impl LabelStats {
    /// A suggested policy check: true when the longest label is at least `min_len` bytes long
    /// *and* some label has at least `min_entropy` bits per character. Shannon entropy of a
    /// short label is a weak signal (ordinary `github-production-release-asset-2e65be`, 38
    /// bytes, has 4.06; random base32 of 32 bytes about 4.3), so the length is the main
    /// lever: `exceeds(40, 4.0)` passes every ordinary name in the tests and catches base32
    /// in labels of 40+ bytes; shorter labels are bounded by a cap on `payload_len`.
    pub fn exceeds(&self, min_len: usize, min_entropy: f64) -> bool {
        self.max_label_len >= min_len && self.max_label_entropy >= min_entropy
    }
}

/// The [`LabelStats`] of `host` (port, brackets and trailing dot stripped, as in
/// [`scan_host`]).
pub fn label_stats(host: &str) -> LabelStats {
    let name = strip_port(host);
    let labels: Vec<String> = name.split('.').map(|l| l.to_ascii_lowercase()).collect();
    let n = labels.len();
    let payload = &labels[..n.saturating_sub(1).max(1)];
    LabelStats {
        labels: n,
        max_label_len: labels.iter().map(String::len).max().unwrap_or(0),
        max_label_entropy: labels
            .iter()
            .map(|l| shannon_entropy(l.as_bytes()))
            .fold(0.0, f64::max),
        payload_len: payload.iter().map(String::len).sum(),
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::corpus::Rng;

    const SECRET: &str = "bottle-own-secret-Vh3qP9zLm2Xc7Rt";

    fn scanner() -> Scanner {
        Scanner::builder()
            .default_rules(true)
            .known_secret("OWN", SECRET)
            .build()
            .unwrap()
    }

    /// Splits `enc` into `parts` labels of (nearly) equal length and puts them under a domain.
    fn host(enc: &str, parts: usize) -> String {
        let step = enc.len().div_ceil(parts);
        let labels: Vec<&str> = enc
            .as_bytes()
            .chunks(step)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!("{}.wild.test:443", labels.join("."))
    }

    fn encodings(plain: &[u8]) -> Vec<(&'static str, String)> {
        vec![
            (
                "base32",
                data_encoding::BASE32_NOPAD.encode(plain).to_lowercase(),
            ),
            ("BASE32", data_encoding::BASE32_NOPAD.encode(plain)),
            (
                "base32hex",
                data_encoding::BASE32HEX_NOPAD.encode(plain).to_lowercase(),
            ),
            ("hex", data_encoding::HEXLOWER.encode(plain)),
            (
                "base64",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(plain),
            ),
            (
                "base64url",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(plain),
            ),
        ]
    }

    #[test]
    fn known_secret_split_across_labels_is_found() {
        let s = scanner();
        for (name, enc) in encodings(SECRET.as_bytes()) {
            if enc.contains(['+', '/']) {
                continue; // not a host name
            }
            for parts in [2, 3] {
                let h = host(&enc, parts);
                let f = scan_host(&s, &h);
                assert!(
                    f.iter().any(|f| f.known_secret.as_deref() == Some("OWN")
                        && f.location.as_deref() == Some("host")),
                    "{name} in {parts} labels: {h}: {f:?}"
                );
            }
        }
        // With a prefix label and hyphens spliced in.
        let enc = data_encoding::BASE32_NOPAD.encode(SECRET.as_bytes());
        let h = format!(
            "x1.{}-{}.{}.wild.test",
            &enc[..10],
            &enc[10..30],
            &enc[30..]
        );
        assert!(!scan_host(&s, &h).is_empty(), "{h}");
    }

    #[test]
    fn rule_token_in_labels_is_found() {
        let s = scanner();
        let mut rng = Rng::new(3);
        for _ in 0..8 {
            let tok = format!("ghp_{}", rng.chars('a', 36));
            for (name, enc) in encodings(tok.as_bytes()) {
                if enc.contains(['+', '/']) {
                    continue;
                }
                for parts in [2, 3] {
                    let h = host(&enc, parts);
                    let f = scan_host(&s, &h);
                    assert!(
                        f.iter().any(|f| f.rule_id == "github-pat"),
                        "{name} {parts}: {h}: {f:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn ordinary_hosts_are_clean() {
        let s = scanner();
        let hosts = [
            "api.github.com",
            "objects.githubusercontent.com:443",
            "a1b2c3.cloudfront.net",
            "d1a2b3c4d5e6f7.cloudfront.net",
            "s3.us-east-1.amazonaws.com",
            "registry-1.docker.io",
            "production.cloudflare.docker.com",
            "pypi.org",
            "files.pythonhosted.org",
            "static.crates.io",
            "index.crates.io",
            "api.anthropic.com",
            "statsig.anthropic.com",
            "sentry.io",
            "o123456.ingest.sentry.io",
            "my-bucket-name-2024.s3.dualstack.eu-west-1.amazonaws.com",
            "e3b0c44298fc1c149afbf4c8996fb924.r2.cloudflarestorage.com",
            "codeload.github.com",
            "raw.githubusercontent.com",
            "pkg-containers.githubusercontent.com",
            "github-production-release-asset-2e65be.s3.amazonaws.com",
            "lb-140-82-112-4-iad.github.com",
            "ec2-203-0-113-25.compute-1.amazonaws.com",
            "fonts.gstatic.com",
            "www.googleapis.com",
            "storage.googleapis.com",
            "us-central1-aiplatform.googleapis.com",
            "login.microsoftonline.com",
            "management.azure.com",
            "myaccount.blob.core.windows.net",
            "dl-cdn.alpinelinux.org",
            "deb.debian.org",
            "security.ubuntu.com",
            "xn--bcher-kva.example",
            "10.0.0.1:8080",
            "[2001:db8::1]:443",
            "localhost",
        ];
        for h in hosts {
            let f = scan_host(&s, h);
            assert!(f.is_empty(), "{h}: {f:?}");
        }
    }

    #[test]
    fn runs_are_bounded_and_cover_the_tail() {
        assert_eq!(
            runs(3),
            vec![(0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (0, 2)]
        );
        let r = runs(126);
        assert!(r.len() <= MAX_HOST_RUNS + 126);
        assert!((0..126).all(|i| r.contains(&(i, 125))));
        // A long name of one-character labels still finds a secret spread over them.
        let s = scanner();
        let enc = data_encoding::BASE32_NOPAD
            .encode(SECRET.as_bytes())
            .to_lowercase();
        let labels: Vec<String> = enc.chars().map(String::from).collect();
        let h = format!("{}.wild.test", labels.join("."));
        assert!(!scan_host(&s, &h).is_empty(), "{h}");
    }

    /// Agent-controlled input: random names (dots, brackets, colons, non-ASCII, empty labels,
    /// over-long names) never panic and give stats consistent with the labels.
    #[test]
    fn random_names_do_not_panic() {
        let s = scanner();
        let mut rng = Rng::new(99);
        let alphabet: Vec<char> = "ab7Z.-_:[]%\u{e9}\u{1F600}".chars().collect();
        for i in 0..3000 {
            let n = if i % 100 == 0 { 600 } else { rng.below(80) };
            let h: String = (0..n)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            let _ = scan_host(&s, &h);
            let st = label_stats(&h);
            assert!(st.labels >= 1 && st.max_label_len <= h.len(), "{h:?}");
            assert!(st.max_label_entropy >= 0.0 && st.payload_len <= h.len());
        }
    }

    #[test]
    fn label_stats_separate_encoded_from_ordinary() {
        let mut rng = Rng::new(2);
        for _ in 0..20 {
            // An Anthropic-sized token, base32 in three ~50-character labels.
            let tok = format!("sk-ant-oat01-{}AA", rng.chars('w', 93));
            let enc = data_encoding::BASE32_NOPAD
                .encode(tok.as_bytes())
                .to_lowercase();
            let st = label_stats(&host(&enc, 3));
            assert_eq!(st.labels, 5);
            assert_eq!(st.max_label_len, enc.len().div_ceil(3));
            assert_eq!(st.payload_len, enc.len() + "wild".len());
            assert!(st.exceeds(40, 4.0), "{st:?}");
        }
        for h in [
            "objects.githubusercontent.com",
            "github-production-release-asset-2e65be.s3.amazonaws.com",
            "my-bucket-name-2024.s3.dualstack.eu-west-1.amazonaws.com",
            "api.github.com:443",
        ] {
            let st = label_stats(h);
            assert!(!st.exceeds(40, 4.0), "{h}: {st:?}");
        }
        let st = label_stats("a.bb.example.com.");
        assert_eq!((st.labels, st.max_label_len, st.payload_len), (4, 7, 10));
    }
}
