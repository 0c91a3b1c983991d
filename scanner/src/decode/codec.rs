//! Lenient decoders for encoded values (hex, base32, base32hex, base64, base64url) shared by
//! the host, URL and text scanners: each decodes the longest prefix of its alphabet, so a
//! value followed by other text (the next DNS label, a path segment) still decodes.

use crate::{Finding, Scanner};

/// An alphabet a value may be encoded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    /// Hex digits, either case.
    Hex,
    /// RFC 4648 base32 (`A-Z2-7`), either case, unpadded.
    Base32,
    /// RFC 4648 base32hex (`0-9A-V`), either case, unpadded.
    Base32Hex,
    /// Standard base64 (`A-Za-z0-9+/`), unpadded.
    Base64,
    /// URL-safe base64 (`A-Za-z0-9-_`), unpadded.
    Base64Url,
}

impl Codec {
    /// The name used in locations and encodings.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Codec::Hex => "hex",
            Codec::Base32 => "base32",
            Codec::Base32Hex => "base32hex",
            Codec::Base64 => "base64",
            Codec::Base64Url => "base64url",
        }
    }

    fn table(self) -> (&'static [u8; 256], u32) {
        match self {
            Codec::Hex => (&HEX, 4),
            Codec::Base32 => (&B32, 5),
            Codec::Base32Hex => (&B32HEX, 5),
            Codec::Base64 => (&B64, 6),
            Codec::Base64Url => (&B64URL, 6),
        }
    }
}

/// No value: the byte is not in the alphabet.
const NONE: u8 = 0xff;

const fn table(alphabet: &[u8], fold_case: bool) -> [u8; 256] {
    let mut t = [NONE; 256];
    let mut i = 0;
    while i < alphabet.len() {
        let c = alphabet[i];
        t[c as usize] = i as u8;
        if fold_case {
            t[c.to_ascii_lowercase() as usize] = i as u8;
            t[c.to_ascii_uppercase() as usize] = i as u8;
        }
        i += 1;
    }
    t
}

static HEX: [u8; 256] = table(b"0123456789ABCDEF", true);
static B32: [u8; 256] = table(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", true);
static B32HEX: [u8; 256] = table(b"0123456789ABCDEFGHIJKLMNOPQRSTUV", true);
static B64: [u8; 256] = table(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    false,
);
static B64URL: [u8; 256] = table(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    false,
);

/// Decodes the longest prefix of `input` in `codec`'s alphabet into `out` (cleared first);
/// bits that do not fill a last byte are dropped. Returns how many input bytes were used.
pub(crate) fn decode_prefix(codec: Codec, input: &[u8], out: &mut Vec<u8>) -> usize {
    let (t, bits) = codec.table();
    out.clear();
    let (mut acc, mut n) = (0u32, 0u32);
    for (i, &c) in input.iter().enumerate() {
        let v = t[c as usize];
        if v == NONE {
            return i;
        }
        acc = (acc << bits) | u32::from(v);
        n += bits;
        if n >= 8 {
            n -= 8;
            out.push((acc >> n) as u8);
            acc &= (1 << n) - 1;
        }
    }
    input.len()
}

/// True when `b` is mostly text: at least 85 % printable ASCII or whitespace. Rule patterns
/// are ASCII, so decoded bytes that are not text (digests, UUIDs, random labels) are only
/// checked for known secrets.
pub(crate) fn is_texty(b: &[u8]) -> bool {
    let text = b
        .iter()
        .filter(|&&c| (0x20..0x7f).contains(&c) || matches!(c, b'\t' | b'\n' | b'\r'))
        .count();
    text * 100 >= b.len() * 85
}

/// Decoded values shorter than this are not scanned (no credential is this short).
pub(crate) const MIN_DECODED: usize = 8;

/// Decodes `candidate` (its longest prefix) with `codec` and appends what the scanner finds in
/// the decoded bytes (no location): rules and known secrets when the bytes are text, known
/// secrets only otherwise. Known-secret findings get `encoding` set to the codec's name.
/// `buf` is scratch space.
pub(crate) fn scan_decoded_append(
    scanner: &Scanner,
    codec: Codec,
    candidate: &[u8],
    buf: &mut Vec<u8>,
    out: &mut Vec<Finding>,
) {
    decode_prefix(codec, candidate, buf);
    if buf.len() < MIN_DECODED {
        return;
    }
    let start = out.len();
    if is_texty(buf) {
        scanner.scan_append(buf, out);
    } else if scanner.has_known() {
        out.extend(
            scanner
                .scan_known_located(buf, "")
                .into_iter()
                .map(|mut f| {
                    f.location = None;
                    f
                }),
        );
    }
    for f in &mut out[start..] {
        if f.known_secret.is_some() {
            f.encoding = Some(codec.name().to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::Rng;
    use base64::Engine as _;

    /// The lenient decoders agree with the strict ones on whole values, and decode a prefix of
    /// a value followed by foreign bytes to a prefix of the value.
    #[test]
    fn decoders_match_reference_encoders() {
        let mut rng = Rng::new(11);
        let mut buf = Vec::new();
        for _ in 0..500 {
            let n = rng.below(80);
            let plain = rng.bytes(n);
            let encs: [(Codec, String); 5] = [
                (Codec::Hex, data_encoding::HEXLOWER.encode(&plain)),
                (
                    Codec::Base32,
                    data_encoding::BASE32_NOPAD.encode(&plain).to_lowercase(),
                ),
                (
                    Codec::Base32Hex,
                    data_encoding::BASE32HEX_NOPAD.encode(&plain),
                ),
                (
                    Codec::Base64,
                    base64::engine::general_purpose::STANDARD_NO_PAD.encode(&plain),
                ),
                (
                    Codec::Base64Url,
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&plain),
                ),
            ];
            for (c, e) in encs {
                assert_eq!(decode_prefix(c, e.as_bytes(), &mut buf), e.len());
                assert_eq!(buf, plain, "{c:?} {e}");
                let cut = rng.below(e.len() + 1);
                let mut v = e.as_bytes()[..cut].to_vec();
                v.extend_from_slice(b".!wild");
                assert_eq!(decode_prefix(c, &v, &mut buf), cut);
                assert!(plain.starts_with(&buf), "{c:?}");
            }
        }
    }
}
