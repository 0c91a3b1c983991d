//! Canonical host, authority, request-target and path forms.
//!
//! There is exactly **one** canonical host form everywhere in bottle (policy
//! entries, CONNECT targets, `Host` headers, h2 `:authority`, TLS SNI, audit):
//!
//! * names: IDNA (UTS #46) mapped to punycode, lower case, at most one trailing
//!   dot stripped, labels of `a-z 0-9 - _`, each 1–63 bytes, 253 bytes in all;
//! * IPv4: dotted decimal, whatever notation the input used (`2130706433`,
//!   `0x7f.1`, `0177.0.0.1`, `127.1` all become `127.0.0.1`, as browsers and
//!   `inet_aton` read them);
//! * IPv6: only inside brackets (`[::1]`), printed in RFC 5952 form.
//!
//! Anything else (userinfo, fragments, paths, spaces, brackets around a name,
//! an unbracketed IPv6 address, a zone id, percent escapes) is refused with a
//! [`CanonError`] rather than guessed at: every known allowlist bypass of this
//! kind came from a parser that guessed.
//!
//! Paths are canonicalised by [`normalize_path`] before any path rule sees them.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

/// Longest input (bytes) any parser here looks at; longer input is refused.
const MAX_INPUT: usize = 2048;
/// Longest canonical host name, in bytes (RFC 1035).
const MAX_NAME: usize = 253;
/// Longest label, in bytes (RFC 1035).
const MAX_LABEL: usize = 63;

/// A canonical host: a punycode, lower-case DNS name, or an IP address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// A canonical DNS name (`api.github.com`, `xn--bcher-kva.example`).
    Name(String),
    /// An IP address (`10.0.0.1`, `::1`).
    Ip(IpAddr),
}

impl Host {
    /// The name, if this is a DNS name.
    pub fn as_name(&self) -> Option<&str> {
        match self {
            Host::Name(n) => Some(n),
            Host::Ip(_) => None,
        }
    }

    /// The address, if this is an IP literal.
    pub fn as_ip(&self) -> Option<IpAddr> {
        match self {
            Host::Name(_) => None,
            Host::Ip(ip) => Some(*ip),
        }
    }

    /// The form used in a TLS SNI / certificate SAN / DNS query: names as is,
    /// IP addresses without brackets.
    pub fn to_server_name(&self) -> String {
        match self {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }
}

impl fmt::Display for Host {
    /// `name`, `1.2.3.4` or `[::1]` (the form used in authorities and policy files).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
        }
    }
}

/// Why a host, authority, request target or path was refused.
///
/// The message names the (sanitised) input and what is wrong with it. Userinfo
/// (`user:password@`) is never echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} `{input}`: {reason}")]
pub struct CanonError {
    /// What was being parsed: `host`, `authority`, `request target`, `path`, `port`.
    pub what: &'static str,
    /// The input, sanitised for display (userinfo removed, control characters
    /// escaped, truncated).
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl CanonError {
    fn new(what: &'static str, input: &str, reason: impl Into<String>) -> Self {
        CanonError {
            what,
            input: sanitize(input),
            reason: reason.into(),
        }
    }
}

/// Makes input safe to show in an error: anything before an `@` (userinfo,
/// which may hold a password) is replaced by `***`, control and non-ASCII
/// characters are escaped, and the result is cut at 120 characters.
fn sanitize(input: &str) -> String {
    let shown = match input.rfind('@') {
        Some(at) => {
            // Keep any scheme prefix, hide everything up to the last '@'.
            let start = input.find("://").map(|i| i + 3).unwrap_or(0);
            if start <= at {
                format!("{}***{}", &input[..start], &input[at..])
            } else {
                input.to_string()
            }
        }
        None => input.to_string(),
    };
    let mut out = String::new();
    for c in shown.chars() {
        if out.len() >= 120 {
            out.push('…');
            break;
        }
        if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

/// Canonicalises a request-side host (CONNECT target host, `Host` header host,
/// SNI, absolute-form authority host) — no port.
///
/// IDNA→punycode (UTS #46), lower case, one trailing dot stripped, bracketed
/// IPv6 only, IPv4 in any notation becomes [`Host::Ip`]. Refuses empty input,
/// userinfo (`@`), `#`, `/`, `?`, `\`, `%`, spaces and other forbidden
/// characters, `[example.com]`, zone ids and unbracketed IPv6.
pub fn canonical_host(input: &str) -> Result<Host, CanonError> {
    const WHAT: &str = "host";
    if input.is_empty() {
        return Err(CanonError::new(WHAT, input, "is empty"));
    }
    if input.len() > MAX_INPUT {
        return Err(CanonError::new(WHAT, input, "is too long"));
    }
    if let Some(inner) = input.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return Err(CanonError::new(WHAT, input, "has an unclosed `[`"));
        };
        if inner.contains('%') {
            return Err(CanonError::new(
                WHAT,
                input,
                "IPv6 zone ids (`%...`) are not allowed",
            ));
        }
        return match inner.parse::<Ipv6Addr>() {
            Ok(v6) => Ok(Host::Ip(IpAddr::V6(v6))),
            Err(_) => Err(CanonError::new(
                WHAT,
                input,
                "brackets are only for IPv6 addresses (`[::1]`); write names and IPv4 addresses without them",
            )),
        };
    }
    // Refuse the characters that make parsers disagree before IDNA mapping
    // could hide them (e.g. fullwidth forms map to ASCII ones). Userinfo is
    // reported first: it is the most telling sign of a confused target.
    if input.contains('@') {
        return Err(CanonError::new(
            WHAT,
            input,
            "contains userinfo (`@`); a host never has one",
        ));
    }
    for c in input.chars() {
        let reason = match c {
            '#' => "contains `#`; a host never has a fragment",
            '/' | '\\' => "contains a path separator",
            '?' => "contains `?`; a host never has a query",
            '%' => "contains a percent escape; write the host unescaped",
            '[' | ']' => "brackets are only allowed around a whole IPv6 address",
            ':' => {
                if input.parse::<Ipv6Addr>().is_ok() {
                    "IPv6 addresses must be bracketed (`[::1]`)"
                } else {
                    "contains `:`; give the port separately"
                }
            }
            c if c.is_whitespace() => "contains whitespace",
            c if c.is_control() => "contains a control character",
            _ => continue,
        };
        return Err(CanonError::new(WHAT, input, reason));
    }
    let mapped = Uts46::new()
        .to_ascii(
            input.as_bytes(),
            AsciiDenyList::URL,
            Hyphens::Allow,
            DnsLength::Ignore,
        )
        .map_err(|_| {
            CanonError::new(
                WHAT,
                input,
                "is not a valid internationalised domain name (IDNA/UTS #46)",
            )
        })?;
    // A mapped form may only contain what we check for below; re-check the
    // separators in case a Unicode character mapped to one of them.
    if mapped
        .chars()
        .any(|c| matches!(c, '@' | '#' | '/' | '\\' | '?' | '%' | ':' | '[' | ']'))
    {
        return Err(CanonError::new(
            WHAT,
            input,
            "maps (IDNA) to a string with forbidden characters",
        ));
    }
    let name = mapped.strip_suffix('.').unwrap_or(&mapped);
    if name.is_empty() {
        return Err(CanonError::new(WHAT, input, "has no labels"));
    }
    if ends_in_number(name) {
        return match parse_ipv4_any(name) {
            Some(v4) => Ok(Host::Ip(IpAddr::V4(v4))),
            None => Err(CanonError::new(
                WHAT,
                input,
                "looks like an IPv4 address but is not a valid one",
            )),
        };
    }
    if name.len() > MAX_NAME {
        return Err(CanonError::new(
            WHAT,
            input,
            format!("is longer than {MAX_NAME} bytes"),
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(CanonError::new(
                WHAT,
                input,
                "has an empty label (`..` or a leading/second trailing dot)",
            ));
        }
        if label.len() > MAX_LABEL {
            return Err(CanonError::new(
                WHAT,
                input,
                format!("has a label longer than {MAX_LABEL} bytes"),
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(CanonError::new(
                WHAT,
                input,
                "contains characters not allowed in a host name",
            ));
        }
    }
    Ok(Host::Name(name.to_string()))
}

/// WHATWG URL "ends in a number": the last label is all decimal digits or a
/// `0x`/`0X` hex number. Such hosts must be IPv4 addresses.
fn ends_in_number(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or("");
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match last.strip_prefix("0x").or_else(|| last.strip_prefix("0X")) {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// Parses one IPv4 part: decimal, `0x` hex or leading-`0` octal.
fn parse_ipv4_part(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(h) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (h, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        // "0x" alone is 0 in WHATWG URL parsing.
        return Some(0);
    }
    if !digits.bytes().all(|b| (b as char).is_digit(radix)) {
        return None;
    }
    // Leading zeros cannot overflow the value but can overflow a naive parse.
    let trimmed = digits.trim_start_matches('0');
    if trimmed.len() > 11 {
        return None;
    }
    if trimmed.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(trimmed, radix).ok()
}

/// Parses an IPv4 address in any of the notations `inet_aton` and browsers
/// accept: 1 to 4 parts, each decimal, hex or octal; the last part fills the
/// remaining bytes (`127.1`, `10.0.258`, `2130706433`).
pub fn parse_ipv4_any(s: &str) -> Option<Ipv4Addr> {
    let s = s.strip_suffix('.').unwrap_or(s);
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        nums.push(parse_ipv4_part(p)?);
    }
    let (last, init) = nums.split_last()?;
    if init.iter().any(|&n| n > 255) {
        return None;
    }
    let rest_bits = 8 * (4 - init.len() as u32);
    if *last >= 1u64 << rest_bits {
        return None;
    }
    let mut value: u64 = *last;
    for (i, n) in init.iter().enumerate() {
        value |= n << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(value as u32))
}

/// Parses a `host[:port]` authority as in CONNECT targets and `Host` headers.
///
/// The host is canonicalised with [`canonical_host`]; IPv6 must be bracketed.
/// The port, if present, must be 1–65535 in plain decimal; an empty port
/// (`host:`) is refused. Without a port, `default_port` is used.
pub fn parse_authority(input: &str, default_port: u16) -> Result<(Host, u16), CanonError> {
    const WHAT: &str = "authority";
    if input.is_empty() {
        return Err(CanonError::new(WHAT, input, "is empty"));
    }
    if input.len() > MAX_INPUT {
        return Err(CanonError::new(WHAT, input, "is too long"));
    }
    if input.contains('@') {
        return Err(CanonError::new(
            WHAT,
            input,
            "contains userinfo (`user@`); credentials in proxy targets are refused",
        ));
    }
    let (host_part, port_part) = if input.starts_with('[') {
        match input.find(']') {
            Some(close) => {
                let rest = &input[close + 1..];
                if rest.is_empty() {
                    (&input[..=close], None)
                } else if let Some(p) = rest.strip_prefix(':') {
                    (&input[..=close], Some(p))
                } else {
                    return Err(CanonError::new(
                        WHAT,
                        input,
                        "unexpected text after `]`; expected `:port`",
                    ));
                }
            }
            None => return Err(CanonError::new(WHAT, input, "has an unclosed `[`")),
        }
    } else {
        match input.rsplit_once(':') {
            Some((h, p)) => {
                if h.contains(':') {
                    return Err(CanonError::new(
                        WHAT,
                        input,
                        "IPv6 addresses must be bracketed (`[::1]:443`)",
                    ));
                }
                (h, Some(p))
            }
            None => (input, None),
        }
    };
    let port = match port_part {
        None => default_port,
        Some(p) => parse_port(p).map_err(|reason| CanonError::new(WHAT, input, reason))?,
    };
    let host = canonical_host(host_part).map_err(|e| CanonError {
        what: WHAT,
        input: sanitize(input),
        reason: format!("host {}", e.reason),
    })?;
    Ok((host, port))
}

/// Parses a decimal port 1–65535 (no sign, no spaces, at most 5 digits).
fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() {
        return Err("has an empty port after `:`".into());
    }
    if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err("port must be a decimal number 1-65535".into());
    }
    match p.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err("port must be a decimal number 1-65535".into()),
    }
}

/// URI scheme of an absolute-form request target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `http://`
    Http,
    /// `https://`
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// 80 or 443.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decided absolute-form request target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Canonical host.
    pub host: Host,
    /// Port (explicit, or the scheme's default).
    pub port: u16,
    /// Path and query exactly as sent (`/` if the URI had none); run the path
    /// through [`normalize_path`] before matching or forwarding.
    pub path_and_query: String,
}

/// Parses an absolute-form proxy request target (`GET http://host:port/path`).
///
/// Refuses other schemes, a missing authority and userinfo.
pub fn parse_absolute_target(uri: &http::Uri) -> Result<Target, CanonError> {
    const WHAT: &str = "request target";
    let shown = uri.to_string();
    let scheme = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
        Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
        Some(_) => {
            return Err(CanonError::new(
                WHAT,
                &shown,
                "only http:// and https:// targets are proxied",
            ))
        }
        None => {
            return Err(CanonError::new(
                WHAT,
                &shown,
                "is not in absolute form (`http://host/path`)",
            ))
        }
    };
    let Some(authority) = uri.authority() else {
        return Err(CanonError::new(WHAT, &shown, "has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(CanonError::new(
            WHAT,
            &shown,
            "contains userinfo (`user@`); credentials in proxy targets are refused",
        ));
    }
    let (host, port) =
        parse_authority(authority.as_str(), scheme.default_port()).map_err(|e| CanonError {
            what: WHAT,
            input: sanitize(&shown),
            reason: e.reason,
        })?;
    let path_and_query = match uri.path_and_query() {
        Some(pq) if !pq.as_str().is_empty() => {
            if pq.as_str().starts_with('/') {
                pq.as_str().to_string()
            } else {
                format!("/{}", pq.as_str())
            }
        }
        _ => "/".to_string(),
    };
    Ok(Target {
        scheme,
        host,
        port,
        path_and_query,
    })
}

/// Drops query values for audit records: `/a?x=1&y=2` → `/a?x=&y=`.
///
/// Parameter names are kept (followed by `=`); a parameter without `=` could
/// itself be a secret, so it is dropped (an empty item remains). A fragment,
/// if any, is dropped too.
pub fn redact_query(path_and_query: &str) -> String {
    let without_fragment = path_and_query.split('#').next().unwrap_or("");
    let Some((path, query)) = without_fragment.split_once('?') else {
        return without_fragment.to_string();
    };
    let mut out = String::with_capacity(path.len() + query.len() / 2 + 1);
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        if let Some((name, _value)) = pair.split_once('=') {
            out.push_str(name);
            out.push('=');
        }
    }
    out
}

/// Is `b` an RFC 3986 unreserved character?
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Canonicalises a request path (no query) for matching and forwarding.
///
/// The rules, in order:
/// 1. the path must start with `/` and contain only visible ASCII (no `?`,
///    `#`, spaces or control characters);
/// 2. percent escapes must be well formed; escapes of unreserved characters
///    (`%2e` → `.`, `%41` → `A`, `%7E` → `~`) are decoded, every other escape
///    is kept with upper-case hex (`%2f` → `%2F`);
/// 3. runs of `/` collapse to one (`/a//b` → `/a/b`), so a server that
///    collapses slashes cannot see a different dot-segment structure;
/// 4. dot segments are removed as in RFC 3986 §5.2.4 (`/a/./b/../c` → `/a/c`;
///    `..` never climbs above `/`);
/// 5. a segment that is a dot segment only once an encoded slash or backslash
///    (`%2F`, `%5C`) or a raw backslash is read as a separator
///    (`/a/..%2Fb`, `/a%2F..%2Fb`) is refused: servers disagree on those.
///
/// The proxy forwards this canonical path (plus the original query), so what
/// was matched is what the upstream sees.
pub fn normalize_path(path: &str) -> Result<String, CanonError> {
    const WHAT: &str = "path";
    if path.len() > 64 * 1024 {
        return Err(CanonError::new(WHAT, path, "is longer than 65536 bytes"));
    }
    if !path.starts_with('/') {
        return Err(CanonError::new(WHAT, path, "must start with `/`"));
    }
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
                let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(CanonError::new(
                        WHAT,
                        path,
                        "has a malformed percent escape (`%` must be followed by two hex digits)",
                    ));
                };
                let v = (h * 16 + l) as u8;
                if is_unreserved(v) {
                    decoded.push(v as char);
                } else {
                    decoded.push('%');
                    decoded.push(char::from_digit(h, 16).unwrap_or('0').to_ascii_uppercase());
                    decoded.push(char::from_digit(l, 16).unwrap_or('0').to_ascii_uppercase());
                }
                i += 3;
            }
            b'?' | b'#' => {
                return Err(CanonError::new(
                    WHAT,
                    path,
                    "contains `?` or `#`; pass the path without query or fragment",
                ))
            }
            0x21..=0x7e => {
                decoded.push(b as char);
                i += 1;
            }
            _ => {
                return Err(CanonError::new(
                    WHAT,
                    path,
                    "contains a space, control or non-ASCII byte (must be percent-encoded)",
                ))
            }
        }
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last_index = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (idx, seg) in segments.iter().enumerate() {
        let is_last = idx == last_index;
        if seg.is_empty() {
            // Collapsed slash; a final empty segment keeps the trailing `/`.
            if is_last {
                trailing_slash = true;
            }
            continue;
        }
        if hidden_dot_segment(seg) {
            return Err(CanonError::new(
                WHAT,
                path,
                "contains a dot segment hidden behind an encoded slash or backslash",
            ));
        }
        match *seg {
            "." => {
                if is_last {
                    trailing_slash = true;
                }
            }
            ".." => {
                out.pop();
                if is_last {
                    trailing_slash = true;
                }
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(decoded.len());
    for s in &out {
        result.push('/');
        result.push_str(s);
    }
    if result.is_empty() || trailing_slash {
        result.push('/');
    }
    Ok(result)
}

/// Does `seg` (already split on `/`) contain a `.` or `..` part when `%2F`,
/// `%5C` and `\` are also read as separators?
fn hidden_dot_segment(seg: &str) -> bool {
    if !(seg.contains('%') || seg.contains('\\')) {
        return false;
    }
    let unified = seg
        .replace("%2F", "/")
        .replace("%5C", "/")
        .replace('\\', "/");
    if unified == seg {
        return false;
    }
    unified.split('/').any(|p| p == "." || p == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_notations() {
        for (input, want) in [
            ("127.0.0.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("0x7F000001", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("017700000001", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("10.0.258", "10.0.1.2"),
            ("0", "0.0.0.0"),
            ("0x", "0.0.0.0"),
            ("255.255.255.255", "255.255.255.255"),
        ] {
            assert_eq!(
                parse_ipv4_any(input).map(|a| a.to_string()).as_deref(),
                Some(want),
                "{input}"
            );
        }
        for bad in [
            "256.0.0.1",
            "1.2.3.4.5",
            "4294967296",
            "08",
            "0x1g",
            "",
            "1..2",
        ] {
            assert_eq!(parse_ipv4_any(bad), None, "{bad}");
        }
    }

    #[test]
    fn sanitize_hides_userinfo() {
        let s = sanitize("http://user:hunter2@evil.com/");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("evil.com"));
    }
}
