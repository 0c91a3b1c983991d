//! The on-disk policy format (TOML), exactly as written by a user or rendered
//! by the launcher from a bottle manifest.
//!
//! These types are *unvalidated*: they mirror the file. [`super::Policy`] is
//! what the proxy runs on, built from a [`PolicyFile`] by `Policy::from_spec`,
//! which canonicalises hosts, compiles regexes and refuses anything doubtful.
//! The user-facing description and every validation rule: `docs/policy.md`.
//!
//! ```toml
//! [settings]                      # all optional
//! max_request_head = 65536        # bytes of request line + headers
//! max_tunnels = 1024              # concurrent CONNECT tunnels
//! handshake_timeout_ms = 10000    # client TLS handshake deadline
//! idle_timeout_ms = 300000        # idle connection / tunnel timeout
//! connect_timeout_ms = 10000      # upstream TCP connect timeout
//! extra_roots = ["-----BEGIN CERTIFICATE-----..."]  # extra upstream trust anchors (PEM)
//!
//! [[route]]
//! id = "github-api"               # optional; defaults to the host
//! host = "api.github.com"         # exact, or "*.github.com" (strict subdomains)
//! ports = [443]                   # default: 443 and 80
//! passthrough = false             # splice TLS without bumping
//! allow_private = ["172.17.0.1/32"]
//! dlp = true                      # or false, or ["rule-id", ...]
//! on_match = "block"              # or "redact"
//! inbound_dlp = false
//! body_cap = 10485760             # bytes buffered for DLP
//! auth = { scheme = "Bearer", secret = "GH_TOKEN" }
//! git_push = false                # smart-HTTP git push (git-receive-pack); off by default
//! websocket = true                # WebSocket upgrades, frames scanned
//! label_cap = { max_len = 40, max_entropy = 3.9 }  # wildcard routes only; `false` = off
//!
//! [[route.matches]]               # a request must match one (if any are given)
//! path = "/repos/acme/widget"     # exact
//! # path_prefix = "/repos/"  |  path_regex = "^/repos/[^/]+/widget$"
//! methods = ["GET", "POST"]
//! headers = { "accept" = "application/json" }  # required header values
//! ```
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A whole policy file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Proxy-wide limits and trust settings.
    #[serde(default)]
    pub settings: SettingsSpec,
    /// The allowlist. Anything not matched by a route is denied.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSpec>,
}

/// Proxy-wide limits; every field is optional and has a safe default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsSpec {
    /// Maximum bytes of a request line plus headers.
    pub max_request_head: Option<usize>,
    /// Maximum concurrent CONNECT tunnels.
    pub max_tunnels: Option<usize>,
    /// Deadline for the client-side TLS handshake, in milliseconds.
    pub handshake_timeout_ms: Option<u64>,
    /// Idle timeout for connections and tunnels, in milliseconds.
    pub idle_timeout_ms: Option<u64>,
    /// Upstream TCP connect timeout, in milliseconds.
    pub connect_timeout_ms: Option<u64>,
    /// Maximum bytes spliced through one WebSocket or passthrough tunnel (0 = unlimited).
    pub max_tunnel_bytes: Option<u64>,
    /// Extra upstream trust anchors, as PEM text (added to the webpki roots).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_roots: Vec<String>,
    /// Extra DLP rule files, each the TOML *text* of a scanner rule file (gitleaks-like; see
    /// `scanner/README.md`). A bottle manifest names files here; the launcher inlines them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dlp_rules: Vec<String>,
    /// DLP rule ids to turn off on every route. The core floor (cloud keys, git-host
    /// tokens, private keys) cannot be turned off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dlp_disable: Vec<String>,
}

/// One allowlist entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Stable identifier used in audit records; defaults to `host`.
    pub id: Option<String>,
    /// Canonical host: `api.github.com`, `*.github.com`, `10.0.0.1` or `[::1]`.
    pub host: String,
    /// Allowed ports; empty means 443 and 80.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Request matchers; a request must match at least one. Empty = any request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<MatchSpec>,
    /// Splice TLS end to end instead of bumping (SNI must still equal the CONNECT host).
    #[serde(default)]
    pub passthrough: bool,
    /// Private address ranges (CIDR) this route may reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_private: Vec<String>,
    /// DLP on outbound requests: `true` (default), `false`, or a list of rule ids.
    pub dlp: Option<DlpSpec>,
    /// What to do when DLP matches.
    pub on_match: Option<OnMatch>,
    /// Also scan responses (off by default).
    pub inbound_dlp: Option<bool>,
    /// Bytes of a body buffered for DLP before `over_cap` applies.
    pub body_cap: Option<usize>,
    /// What to do with a body larger than `body_cap` (default: block).
    pub over_cap: Option<OnMatch>,
    /// A credential the sidecar injects on this route.
    pub auth: Option<AuthSpec>,
    /// Allow smart-HTTP `git push` (`git-receive-pack`) on this route. Off by default: pushes
    /// are invisible to body DLP (zlib-compressed pack objects) and belong to the git gate.
    pub git_push: Option<bool>,
    /// Allow WebSocket upgrades (frames are parsed and scanned). Default `true`.
    pub websocket: Option<bool>,
    /// Per-label cap on the names a wildcard route accepts (exfiltration through host names):
    /// `false` turns it off, a table sets the limits. Default: on, see [`LabelCapSpec`].
    pub label_cap: Option<LabelCapSpec>,
}

/// The host-name label cap of a wildcard route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LabelCapSpec {
    /// `true` = the defaults, `false` = no cap.
    Enabled(bool),
    /// Explicit limits.
    Limits(LabelLimitsSpec),
}

/// Explicit label limits; unset fields take the defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelLimitsSpec {
    /// Longest label (bytes) allowed left of the wildcard suffix (default 40).
    pub max_len: Option<usize>,
    /// Highest Shannon entropy, in bits per character, of a label of 16 bytes or more left of
    /// the wildcard suffix (default 3.9).
    pub max_entropy: Option<f64>,
}

/// One request matcher: all given conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Exact path (no query).
    pub path: Option<String>,
    /// Path prefix.
    pub path_prefix: Option<String>,
    /// Path regex, matched against the whole canonical path (implicitly
    /// anchored as `^(?:...)$`).
    pub path_regex: Option<String>,
    /// Allowed methods (upper case); empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Required request headers (lower-case name → exact value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// DLP setting of a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DlpSpec {
    /// All rules on, or DLP off.
    Enabled(bool),
    /// Only these rule ids (the core floor always applies).
    Rules(Vec<String>),
}

/// Action on a DLP match or an over-cap body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnMatch {
    /// Refuse the request (403, `X-Bottle-Deny: dlp`).
    #[default]
    Block,
    /// Replace the secret and forward.
    Redact,
    /// Forward unscanned remainder (only meaningful for `over_cap`).
    Allow,
}

/// A credential injected by the sidecar: `{ scheme = "Bearer", secret = "NAME" }`
/// or `{ header = "x-api-key", secret = "NAME" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    /// `Bearer`, `token` or `Basic` (sent in `Authorization`).
    pub scheme: Option<String>,
    /// A custom header to carry the raw secret instead of `Authorization`.
    pub header: Option<String>,
    /// Name of the secret (delivered to the sidecar out of band, never in the policy).
    pub secret: String,
}
