//! Request matching inside a route: path rules, methods and required headers.
//!
//! A route with no matchers allows every request that reached it. Otherwise a
//! request must satisfy at least one [`RequestMatch`]: its path rule, its
//! method list and all its required headers. Paths are matched after
//! [`crate::canon::normalize_path`] (dot segments removed, unreserved escapes
//! decoded, slashes collapsed), never as sent.
use http::{HeaderMap, HeaderName};
use regex::Regex;

use crate::canon::normalize_path;
use crate::policy::{Deny, DenyReason};

/// How a matcher constrains the (canonical) path.
#[derive(Clone, Debug)]
pub enum PathRule {
    /// Any path.
    Any,
    /// Exactly this canonical path.
    Exact(String),
    /// This canonical prefix, on a segment boundary: `/repos` matches `/repos`
    /// and `/repos/x` but not `/reposx`; `/repos/` matches `/repos/x` only.
    Prefix(String),
    /// A regex matched against the whole canonical path (implicitly anchored
    /// as `^(?:...)$`).
    Regex(Regex),
}

impl PathRule {
    /// Does the canonical `path` satisfy this rule?
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathRule::Any => true,
            PathRule::Exact(p) => path == p,
            PathRule::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (p.ends_with('/')
                        || path.len() == p.len()
                        || path.as_bytes().get(p.len()) == Some(&b'/'))
            }
            PathRule::Regex(r) => r.is_match(path),
        }
    }
}

/// One request matcher: path rule, methods and required headers must all hold.
#[derive(Clone, Debug)]
pub struct RequestMatch {
    /// The path condition.
    pub path: PathRule,
    /// Allowed methods (upper-case tokens, compared exactly); empty = any.
    pub methods: Vec<String>,
    /// Required headers: lower-case name and exact value; a request passes if
    /// any of its values for that name equals the given value.
    pub headers: Vec<(HeaderName, String)>,
}

/// How far a request got through one matcher (for choosing the deny reason).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Progress {
    Path,
    Method,
    Header,
    Matched,
}

impl RequestMatch {
    fn progress(&self, method: &str, path: &str, headers: &HeaderMap) -> Progress {
        if !self.path.matches(path) {
            return Progress::Path;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == method) {
            return Progress::Method;
        }
        for (name, want) in &self.headers {
            let ok = headers
                .get_all(name)
                .iter()
                .any(|v| v.as_bytes() == want.as_bytes());
            if !ok {
                return Progress::Header;
            }
        }
        Progress::Matched
    }
}

/// Checks a request against a route's matchers (see the module docs).
///
/// `path` is the request path without query. The deny reason is the furthest
/// point any matcher reached: `path` if no path rule matched, `method` if a
/// path matched but not the method, `header` if only headers were missing.
/// Details never include header values or the path itself.
pub fn check_matches(
    route_id: &str,
    matches: &[RequestMatch],
    method: &str,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), Deny> {
    let canonical = normalize_path(path).map_err(|e| {
        Deny::new(
            DenyReason::Path,
            format!("request path refused: {}", e.reason),
        )
    })?;
    if matches.is_empty() {
        return Ok(());
    }
    let best = matches
        .iter()
        .map(|m| m.progress(method, &canonical, headers))
        .max()
        .unwrap_or(Progress::Path);
    match best {
        Progress::Matched => Ok(()),
        Progress::Path => Err(Deny::new(
            DenyReason::Path,
            format!("path is not allowed by route `{route_id}`"),
        )),
        Progress::Method => Err(Deny::new(
            DenyReason::Method,
            format!(
                "method {} is not allowed for this path by route `{route_id}`",
                sanitize_method(method)
            ),
        )),
        Progress::Header => Err(Deny::new(
            DenyReason::Header,
            format!("a header required by route `{route_id}` is missing or has another value"),
        )),
    }
}

/// Methods are tokens; anything else is shown as `?` (the input is untrusted).
fn sanitize_method(method: &str) -> String {
    if method.len() <= 32
        && !method.is_empty()
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        method.to_string()
    } else {
        "?".to_string()
    }
}
