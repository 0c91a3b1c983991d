//! Policy: the allowlist of routes and the proxy limits.
//!
//! `spec` is the file format; the validated, canonical form lives here.
//! [`Policy::load`] / [`Policy::from_toml_str`] / [`Policy::from_spec`] refuse
//! anything doubtful with a [`PolicyError`] naming file, line, key and reason
//! (see `docs/policy.md`). [`Policy::decide`] makes the route decision from a
//! CONNECT target or absolute-form authority before any DNS lookup, and
//! [`Route::check_request`] checks each request inside it.
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use crate::canon::Host;
use crate::route::check_matches;
use crate::ssrf::{classify, embedded_ipv4, AddrClass};

mod error;
mod load;
pub mod spec;
mod suffix;

pub use crate::route::{PathRule, RequestMatch};
pub use error::PolicyError;
pub use spec::*;
pub use suffix::is_public_suffix;

/// Proxy-wide limits and trust settings, with safe defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Maximum bytes of a request line plus headers (default 64 KiB).
    pub max_request_head: usize,
    /// Maximum concurrent CONNECT tunnels (default 1024).
    pub max_tunnels: usize,
    /// Client TLS handshake deadline (default 10 s).
    pub handshake_timeout: Duration,
    /// Idle timeout for connections and tunnels (default 300 s).
    pub idle_timeout: Duration,
    /// Upstream TCP connect timeout (default 10 s).
    pub connect_timeout: Duration,
    /// Maximum bytes spliced through one WebSocket/passthrough tunnel (0 = unlimited).
    pub max_tunnel_bytes: u64,
    /// Extra upstream trust anchors (PEM text, each holding at least one certificate).
    pub extra_roots_pem: Vec<String>,
    /// Extra DLP rule files (TOML text), validated.
    pub dlp_rules: Vec<String>,
    /// DLP rule ids turned off on every route (never core-floor rules), validated.
    pub dlp_disable: Vec<String>,
}

impl Settings {
    /// The DLP scanner these settings describe: the default rules plus `dlp_rules`, minus
    /// `dlp_disable`, with `known` (name, value) secrets. Errors name the setting, and for a
    /// rule file its line and rule id — never a secret value.
    pub fn dlp_scanner<'a>(
        &self,
        known: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<bottle_scanner::Scanner, String> {
        load::dlp_scanner(self, known)
            .map_err(|(key, reason)| format!("settings.{}: {reason}", error::render_key(&key)))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_request_head: 64 * 1024,
            max_tunnels: 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            max_tunnel_bytes: 0,
            extra_roots_pem: Vec::new(),
            dlp_rules: Vec::new(),
            dlp_disable: Vec::new(),
        }
    }
}

/// Which hosts a route covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Exactly this canonical host (name or IP).
    Exact(Host),
    /// Strict subdomains of this canonical suffix (stored without `*.`):
    /// `Wildcard("github.com")` matches `api.github.com` and `a.b.github.com`,
    /// never `github.com` itself.
    Wildcard(String),
}

impl HostPattern {
    /// Does `host` fall under this pattern?
    pub fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (HostPattern::Exact(h), host) => h == host,
            (HostPattern::Wildcard(suffix), Host::Name(name)) => {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix.as_str())
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            }
            (HostPattern::Wildcard(_), Host::Ip(_)) => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => write!(f, "{h}"),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// One validated allowlist entry.
#[derive(Clone, Debug)]
pub struct Route {
    /// Stable id for audit records (defaults to the host as written).
    pub id: String,
    /// Hosts covered.
    pub host: HostPattern,
    /// Allowed ports (never empty; default 443 and 80).
    pub ports: Vec<u16>,
    /// Request matchers; empty = any request.
    pub matches: Vec<RequestMatch>,
    /// Splice TLS without bumping (no request inspection possible).
    pub passthrough: bool,
    /// Private ranges this route may reach.
    pub allow_private: Vec<ipnet::IpNet>,
    /// Outbound DLP setting (always `Enabled(false)` on passthrough routes).
    pub dlp: DlpSpec,
    /// Action on a DLP match (`block` or `redact`).
    pub on_match: OnMatch,
    /// Scan responses too.
    pub inbound_dlp: bool,
    /// Bytes of a body buffered for DLP.
    pub body_cap: usize,
    /// Action for bodies over `body_cap`.
    pub over_cap: OnMatch,
    /// Credential injected on this route (secret *name* only).
    pub auth: Option<AuthSpec>,
    /// Smart-HTTP `git push` allowed (`git_push = true`); refused otherwise.
    pub git_push: bool,
    /// WebSocket upgrades allowed.
    pub websocket: bool,
    /// Host-label cap (wildcard routes only; `None` = no cap).
    pub label_cap: Option<LabelCap>,
}

/// Limits on the labels a wildcard route accepts left of its suffix, so a host name cannot
/// carry an encoded secret out through DNS or the upstream's logs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LabelCap {
    /// Longest label in bytes.
    pub max_len: usize,
    /// Highest Shannon entropy (bits per character) of a label of at least
    /// [`LabelCap::ENTROPY_MIN_LEN`] bytes.
    pub max_entropy: f64,
}

impl LabelCap {
    /// Labels shorter than this are not entropy-checked (too short to judge).
    pub const ENTROPY_MIN_LEN: usize = 16;

    /// The default cap: labels of at most 40 bytes, and at most 3.9 bits per character.
    pub const DEFAULT: LabelCap = LabelCap {
        max_len: 40,
        max_entropy: 3.9,
    };

    /// Checks the labels of `name` left of `suffix` (the wildcard's suffix). The error names
    /// the limit, never the label.
    pub fn check(&self, name: &str, suffix: &str) -> Result<(), String> {
        let left = name
            .strip_suffix(suffix)
            .and_then(|l| l.strip_suffix('.'))
            .unwrap_or(name);
        for (i, label) in left.split('.').enumerate() {
            if label.len() > self.max_len {
                return Err(format!(
                    "label {} of the host name is {} bytes, over the route's label_cap.max_len of {}",
                    i + 1,
                    label.len(),
                    self.max_len
                ));
            }
            if label.len() >= Self::ENTROPY_MIN_LEN {
                let e = bottle_scanner::rules::shannon_entropy(label.as_bytes());
                if e > self.max_entropy {
                    return Err(format!(
                        "label {} of the host name looks random ({e:.2} bits per character, over the route's label_cap.max_entropy of {})",
                        i + 1,
                        self.max_entropy
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Route {
    /// Checks one request (inside a bumped tunnel or absolute-form) against
    /// this route's matchers. `path` is the path only, without query; it is
    /// canonicalised with [`crate::canon::normalize_path`] before matching
    /// (and refused with [`DenyReason::Path`] if it cannot be).
    pub fn check_request(
        &self,
        method: &str,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<(), Deny> {
        check_matches(&self.id, &self.matches, method, path, headers)
    }

    /// Does `allow_private` cover `ip`? IPv4 carried in IPv6 (mapped, NAT64,
    /// 6to4, Teredo) is covered if the carried address is. Cloud metadata
    /// addresses are covered only by an entry naming exactly that address
    /// (`/32` or `/128`), never by a wider range.
    pub fn allows_private(&self, ip: IpAddr) -> bool {
        let metadata = classify(ip) == AddrClass::Metadata;
        let covers = |net: &ipnet::IpNet, ip: IpAddr| {
            net.contains(&ip) && (!metadata || net.prefix_len() == net.max_prefix_len())
        };
        if self.allow_private.iter().any(|n| covers(n, ip)) {
            return true;
        }
        if let IpAddr::V6(v6) = ip {
            let carried = embedded_ipv4(v6);
            if !carried.is_empty() {
                return carried.iter().all(|v4| {
                    self.allow_private
                        .iter()
                        .any(|n| covers(n, IpAddr::V4(*v4)))
                });
            }
        }
        false
    }

    /// Is `port` one of this route's ports?
    pub fn allows_port(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }
}

/// The validated policy the proxy runs on.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Limits and trust settings.
    pub settings: Settings,
    /// The allowlist, in file order.
    pub routes: Vec<Route>,
}

impl Policy {
    /// Reads and validates a policy file. The file name is used in errors.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            origin: origin.clone(),
            line: None,
            key: String::new(),
            reason: format!("cannot read the policy file: {e}"),
        })?;
        Policy::from_toml_str(&text, &origin)
    }

    /// Parses and validates policy TOML; `origin` (a file name) is used in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        load::from_toml_str(text, origin)
    }

    /// Validates an already-parsed policy (e.g. rendered by the launcher).
    /// Errors carry no line numbers.
    pub fn from_spec(spec: PolicyFile, origin: &str) -> Result<Policy, PolicyError> {
        load::from_spec(&spec, origin).map_err(|e| e.into_error(origin, None))
    }

    /// Decides from the CONNECT target / absolute-form authority, before any
    /// DNS lookup.
    ///
    /// Names: exact routes win over wildcards, longer wildcard suffixes over
    /// shorter ones; a route whose host matches but whose ports do not yields
    /// [`DenyReason::Port`] if no other route takes the port. IP literals:
    /// only a route naming that exact address matches ([`DenyReason::IpLiteral`]
    /// otherwise), and a non-public address also needs that route's
    /// `allow_private` to cover it ([`DenyReason::PrivateAddress`]).
    pub fn decide(&self, host: &Host, port: u16) -> Result<&Route, Deny> {
        let mut host_matched = false;
        let mut best: Option<(&Route, usize)> = None;
        for route in &self.routes {
            if !route.host.matches(host) {
                continue;
            }
            host_matched = true;
            if !route.allows_port(port) {
                continue;
            }
            // Specificity: exact beats any wildcard; longer suffix beats shorter.
            let score = match &route.host {
                HostPattern::Exact(_) => usize::MAX,
                HostPattern::Wildcard(s) => s.len(),
            };
            let better = match best {
                None => true,
                Some((_, b)) => score > b,
            };
            if better {
                best = Some((route, score));
            }
        }
        let Some((route, _)) = best else {
            if host_matched {
                return Err(Deny::new(
                    DenyReason::Port,
                    format!("port {port} is not allowed for {host}"),
                ));
            }
            return Err(match host {
                Host::Ip(_) => Deny::new(
                    DenyReason::IpLiteral,
                    format!("IP-literal target {host} is not named by any route"),
                ),
                Host::Name(_) => Deny::new(DenyReason::NoRoute, format!("no route allows {host}")),
            });
        };
        if let (Some(cap), HostPattern::Wildcard(suffix), Host::Name(name)) =
            (&route.label_cap, &route.host, host)
        {
            cap.check(name, suffix).map_err(|why| {
                Deny::new(
                    DenyReason::HostName,
                    format!("{why} (route `{}`)", route.id),
                )
            })?;
        }
        if let Host::Ip(ip) = host {
            let class = classify(*ip);
            if !class.is_public() && !route.allows_private(*ip) {
                return Err(Deny::new(
                    DenyReason::PrivateAddress,
                    format!(
                        "{host} is a {} address and route `{}` does not allow it in allow_private",
                        class.code(),
                        route.id
                    ),
                ));
            }
        }
        Ok(route)
    }

    /// The route with this id, if any.
    pub fn route(&self, id: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.id == id)
    }
}

/// Why a request or connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No route names the host.
    NoRoute,
    /// A route names the host, but not this port.
    Port,
    /// Method not allowed by the route's matchers.
    Method,
    /// Path not allowed by the route's matchers (or not canonicalisable).
    Path,
    /// A required header is missing or different.
    Header,
    /// The target resolves to / is a private address the route does not allow.
    PrivateAddress,
    /// An IP-literal target no route names.
    IpLiteral,
    /// `Host` / `:authority` differs from the CONNECT target (421).
    HostMismatch,
    /// TLS SNI differs from the CONNECT target (421).
    SniMismatch,
    /// DNS resolution failed (502).
    Dns,
    /// DLP found a secret.
    Dlp,
    /// Request head or body too large (413).
    TooLarge,
    /// A proxy limit was hit (503).
    Limit,
    /// The upstream failed (502).
    Upstream,
    /// The proxy was asked to connect to itself (508).
    Loop,
    /// Malformed request (400).
    BadRequest,
    /// The host name itself was refused: DLP found a secret in it, or a wildcard route's
    /// label cap (403). Logged with the name redacted.
    HostName,
    /// An `Upgrade` other than WebSocket, or WebSocket on a route that turned it off (403).
    Upgrade,
    /// Smart-HTTP `git push` on a route without `git_push = true` (403).
    GitPush,
}

impl DenyReason {
    /// The `X-Bottle-Deny` / audit code (snake_case, see docs/design.md).
    pub fn code(self) -> &'static str {
        match self {
            DenyReason::NoRoute => "no_route",
            DenyReason::Port => "port",
            DenyReason::Method => "method",
            DenyReason::Path => "path",
            DenyReason::Header => "header",
            DenyReason::PrivateAddress => "private_address",
            DenyReason::IpLiteral => "ip_literal",
            DenyReason::HostMismatch => "host_mismatch",
            DenyReason::SniMismatch => "sni_mismatch",
            DenyReason::Dns => "dns",
            DenyReason::Dlp => "dlp",
            DenyReason::TooLarge => "too_large",
            DenyReason::Limit => "limit",
            DenyReason::Upstream => "upstream",
            DenyReason::Loop => "loop",
            DenyReason::BadRequest => "bad_request",
            DenyReason::HostName => "host_name",
            DenyReason::Upgrade => "upgrade",
            DenyReason::GitPush => "git_push",
        }
    }

    /// The HTTP status of the deny response: 403 for policy decisions, 421
    /// host/SNI mismatch, 502 upstream/DNS, 400 bad request, 413 too large,
    /// 503 limit, 508 loop.
    pub fn status(self) -> u16 {
        match self {
            DenyReason::HostMismatch | DenyReason::SniMismatch => 421,
            DenyReason::Dns | DenyReason::Upstream => 502,
            DenyReason::BadRequest => 400,
            DenyReason::TooLarge => 413,
            DenyReason::Limit => 503,
            DenyReason::Loop => 508,
            DenyReason::NoRoute
            | DenyReason::Port
            | DenyReason::Method
            | DenyReason::Path
            | DenyReason::Header
            | DenyReason::PrivateAddress
            | DenyReason::IpLiteral
            | DenyReason::Dlp
            | DenyReason::HostName
            | DenyReason::Upgrade
            | DenyReason::GitPush => 403,
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A refusal: the reason code and a detail safe to show to the client and
/// to log (never a secret, header value or query value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deny {
    /// The reason code.
    pub reason: DenyReason,
    /// Human-readable detail.
    pub detail: String,
    /// For DLP decisions: the rule id that fired (`known-secret` for the bottle's own tokens).
    pub rule: Option<String>,
    /// For DLP decisions: where the secret was found (`query:NAME`, `header:NAME`, a JSON
    /// path, `multipart:NAME`, `response:…`), with any name that itself looks secret withheld.
    pub location: Option<String>,
}

impl Deny {
    /// Builds a deny.
    pub fn new(reason: DenyReason, detail: impl Into<String>) -> Self {
        Deny {
            reason,
            detail: detail.into(),
            rule: None,
            location: None,
        }
    }

    /// Adds the DLP rule id and location (both safe to show and log).
    pub fn with_dlp(mut self, rule: impl Into<String>, location: Option<String>) -> Self {
        self.rule = Some(rule.into());
        self.location = location;
        self
    }
}

impl fmt::Display for Deny {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.code(), self.detail)
    }
}

impl std::error::Error for Deny {}
