//! Public-suffix check for wildcard routes, from the Public Suffix List
//! compiled into the binary by the `psl` crate (works offline).

/// Is `domain` (canonical, lower-case punycode, no trailing dot) a public
/// suffix, i.e. a name under which anyone can register (`com`, `co.uk`,
/// `github.io`, `s3.amazonaws.com`)? Single-label names always count, listed
/// or not (`*.internal` would cover every such host).
///
/// A wildcard `*.X` is refused when `X` is a public suffix: it would allow
/// every registrant's domain.
pub fn is_public_suffix(domain: &str) -> bool {
    if !domain.contains('.') {
        return true;
    }
    match psl::suffix(domain.as_bytes()) {
        Some(s) => s.is_known() && s.trim().as_bytes() == domain.as_bytes(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        for ps in [
            "com",
            "uk",
            "co.uk",
            "com.au",
            "github.io",
            "internal",
            "herokuapp.com",
        ] {
            assert!(is_public_suffix(ps), "{ps}");
        }
        for d in [
            "example.com",
            "github.com",
            "example.co.uk",
            "acme.github.io",
            "docker.internal",
        ] {
            assert!(!is_public_suffix(d), "{d}");
        }
    }
}
