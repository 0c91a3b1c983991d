//! Request-target / authority parsers must never panic, and what they accept
//! must be canonical: canonicalising a canonical form again is the identity.
#![no_main]

use bottle_proxy::canon::{
    canonical_host, normalize_path, parse_absolute_target, parse_authority, redact_query,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(host) = canonical_host(s) {
        let shown = host.to_string();
        assert_eq!(
            canonical_host(&shown).as_ref(),
            Ok(&host),
            "canonical form {shown:?} of {s:?} is not stable"
        );
        assert!(!shown.contains(['@', '#', '/', '?', ' ', '%']), "{shown:?}");
    }
    if let Ok((host, port)) = parse_authority(s, 443) {
        assert_ne!(port, 0);
        let again = parse_authority(&format!("{host}:{port}"), 443);
        assert_eq!(again.as_ref(), Ok(&(host, port)), "authority {s:?}");
    }
    if let Ok(uri) = s.parse::<http::Uri>() {
        if let Ok(t) = parse_absolute_target(&uri) {
            assert!(t.path_and_query.starts_with('/'), "{t:?}");
            assert_ne!(t.port, 0);
        }
    }
    if let Ok(p) = normalize_path(s) {
        assert!(p.starts_with('/'));
        assert!(!p.contains("//"), "{p:?}");
        assert!(!p.split('/').any(|seg| seg == "." || seg == ".."), "{p:?}");
        assert_eq!(normalize_path(&p).as_deref(), Ok(p.as_str()), "path {s:?}");
    }
    let redacted = redact_query(s);
    if let Some((_, q)) = redacted.split_once('?') {
        for pair in q.split('&') {
            assert!(pair.is_empty() || pair.ends_with('=') && pair.matches('=').count() == 1);
        }
    }
});
