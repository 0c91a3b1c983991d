//! Fuzz the scanner and the body decoders: arbitrary bytes must never panic.
//! First byte selects the content type / encoding / split point; the rest is the input.
#![no_main]

use std::sync::OnceLock;

use bottle_scanner::decode::{scan_body, scan_headers, scan_url, DecodeLimits};
use bottle_scanner::Scanner;
use libfuzzer_sys::fuzz_target;

fn scanner() -> &'static Scanner {
    static S: OnceLock<Scanner> = OnceLock::new();
    S.get_or_init(|| {
        Scanner::builder()
            .default_rules(true)
            .known_secret("K", "ghp_fuzzKnownSecretValue0123456789abcd")
            .build()
            .expect("scanner")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let s = scanner();
    let _ = s.scan(rest);
    // streaming with a split point
    let at = (sel as usize * 7) % (rest.len() + 1);
    let mut st = s.stream();
    let _ = st.feed(&rest[..at]);
    let _ = st.feed(&rest[at..]);
    let _ = st.finish();
    let ct = match sel % 5 {
        0 => Some("application/json"),
        1 => Some("multipart/form-data; boundary=XyZ"),
        2 => Some("application/x-www-form-urlencoded"),
        3 => None,
        _ => Some("text/plain"),
    };
    let ce = match (sel / 5) % 6 {
        0 => None,
        1 => Some("gzip"),
        2 => Some("deflate"),
        3 => Some("br"),
        4 => Some("zstd"),
        _ => Some("gzip, br"),
    };
    let lim = DecodeLimits {
        max_decoded: 1 << 20,
        max_depth: 4,
    };
    let _ = scan_body(s, ct, ce, rest, &lim);
    let text = String::from_utf8_lossy(rest);
    let _ = scan_url(s, &text);
    let _ = scan_headers(s, [("x-h", rest)]);
});
