//! Validation of a [`PolicyFile`] into a [`Policy`] (rules in `docs/policy.md`).
use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use regex::RegexBuilder;

use super::error::{line_of, path_at, render_key, Invalid, Seg};
use super::suffix::is_public_suffix;
use super::{
    AuthSpec, DlpSpec, HostPattern, LabelCap, LabelCapSpec, MatchSpec, OnMatch, PathRule, Policy,
    PolicyError, PolicyFile, RequestMatch, Route, RouteSpec, Settings, SettingsSpec,
};
use crate::canon::{canonical_host, normalize_path, Host};

/// Largest policy text accepted.
const MAX_POLICY_BYTES: usize = 4 * 1024 * 1024;
/// Most routes accepted.
const MAX_ROUTES: usize = 10_000;
/// Default `body_cap`: 10 MiB.
pub const DEFAULT_BODY_CAP: usize = 10 * 1024 * 1024;
/// Smallest and largest `body_cap`.
const BODY_CAP_RANGE: (usize, usize) = (1024, 64 * 1024 * 1024);
/// Compiled size limit of one path regex.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Schemes accepted in `auth.scheme`.
const AUTH_SCHEMES: [&str; 3] = ["Bearer", "token", "Basic"];
/// Headers a credential may not be injected into (framing, routing, hop-by-hop).
const FORBIDDEN_AUTH_HEADERS: [&str; 11] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
];

/// Parses TOML text and validates it.
pub(crate) fn from_toml_str(text: &str, origin: &str) -> Result<Policy, PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(PolicyError {
            origin: origin.to_string(),
            line: None,
            key: String::new(),
            reason: format!(
                "the policy is {} bytes, more than the limit of {MAX_POLICY_BYTES}",
                text.len()
            ),
        });
    }
    let spec: PolicyFile = toml::from_str(text).map_err(|e| {
        let (line, key) = match e.span() {
            Some(span) => (
                Some(line_of(text, span.start)),
                render_key(&path_at(text, span.start)),
            ),
            None => (None, String::new()),
        };
        PolicyError {
            origin: origin.to_string(),
            line,
            key,
            reason: e.message().trim().replace('\n', " "),
        }
    })?;
    from_spec(&spec, origin).map_err(|e| e.into_error(origin, Some(text)))
}

/// Builds an [`Invalid`] at `path` + `key`.
fn invalid(path: &[Seg], key: &[Seg], reason: impl Into<String>) -> Invalid {
    let mut p = path.to_vec();
    p.extend_from_slice(key);
    Invalid {
        path: p,
        reason: reason.into(),
    }
}

fn k(name: &str) -> Seg {
    Seg::Key(name.to_string())
}

/// Validates a parsed policy file.
pub(crate) fn from_spec(spec: &PolicyFile, _origin: &str) -> Result<Policy, Invalid> {
    let settings = settings(&spec.settings)?;
    if spec.routes.len() > MAX_ROUTES {
        return Err(invalid(
            &[],
            &[k("route")],
            format!(
                "{} routes is more than the limit of {MAX_ROUTES}",
                spec.routes.len()
            ),
        ));
    }
    let mut routes: Vec<Route> = Vec::with_capacity(spec.routes.len());
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (i, rs) in spec.routes.iter().enumerate() {
        let at = [k("route"), Seg::Index(i)];
        let route = route(rs, &at)?;
        if let Some(prev) = ids.insert(route.id.clone(), i) {
            let key = if rs.id.is_some() { "id" } else { "host" };
            return Err(invalid(
                &at,
                &[k(key)],
                format!(
                    "duplicate route id `{}` (route[{prev}] has it too); give each route a distinct `id`",
                    route.id
                ),
            ));
        }
        for (j, other) in routes.iter().enumerate() {
            if other.host == route.host {
                if let Some(port) = route.ports.iter().find(|p| other.ports.contains(p)) {
                    return Err(invalid(
                        &at,
                        &[k("host")],
                        format!(
                            "route[{j}] already covers `{}` on port {port}; merge the two routes' `matches` into one route (or give them disjoint `ports`)",
                            route.host
                        ),
                    ));
                }
            }
        }
        routes.push(route);
    }
    let uses_rules = spec
        .routes
        .iter()
        .any(|r| matches!(r.dlp, Some(DlpSpec::Rules(_))));
    if uses_rules || !settings.dlp_rules.is_empty() || !settings.dlp_disable.is_empty() {
        check_route_rule_ids(spec, &dlp_rule_ids(&settings)?)?;
    }
    Ok(Policy { settings, routes })
}

fn ranged<T: PartialOrd + Copy + std::fmt::Display>(
    value: Option<T>,
    default: T,
    min: T,
    max: T,
    key: &str,
    unit: &str,
) -> Result<T, Invalid> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(invalid(
            &[k("settings")],
            &[k(key)],
            format!("{v} is out of range; give {min} to {max} {unit}"),
        ));
    }
    Ok(v)
}

fn settings(s: &SettingsSpec) -> Result<Settings, Invalid> {
    let d = Settings::default();
    let ms = |d: Duration| d.as_millis() as u64;
    let max_request_head = ranged(
        s.max_request_head,
        d.max_request_head,
        1024,
        1024 * 1024,
        "max_request_head",
        "bytes",
    )?;
    let max_tunnels = ranged(
        s.max_tunnels,
        d.max_tunnels,
        1,
        1_000_000,
        "max_tunnels",
        "",
    )?;
    let handshake = ranged(
        s.handshake_timeout_ms,
        ms(d.handshake_timeout),
        1,
        600_000,
        "handshake_timeout_ms",
        "milliseconds",
    )?;
    let idle = ranged(
        s.idle_timeout_ms,
        ms(d.idle_timeout),
        1,
        86_400_000,
        "idle_timeout_ms",
        "milliseconds",
    )?;
    let connect = ranged(
        s.connect_timeout_ms,
        ms(d.connect_timeout),
        1,
        600_000,
        "connect_timeout_ms",
        "milliseconds",
    )?;
    for (i, pem) in s.extra_roots.iter().enumerate() {
        if !(pem.contains("-----BEGIN CERTIFICATE-----")
            && pem.contains("-----END CERTIFICATE-----"))
        {
            return Err(invalid(
                &[k("settings")],
                &[k("extra_roots"), Seg::Index(i)],
                "expected PEM text holding a `-----BEGIN CERTIFICATE-----` block (the certificate itself, not a file name)",
            ));
        }
    }
    Ok(Settings {
        max_request_head,
        max_tunnels,
        handshake_timeout: Duration::from_millis(handshake),
        idle_timeout: Duration::from_millis(idle),
        connect_timeout: Duration::from_millis(connect),
        max_tunnel_bytes: s.max_tunnel_bytes.unwrap_or(d.max_tunnel_bytes),
        extra_roots_pem: s.extra_roots.clone(),
        dlp_rules: s.dlp_rules.clone(),
        dlp_disable: s.dlp_disable.clone(),
    })
}

/// The name a policy's `settings.dlp_rules[i]` text is known by in scanner errors.
pub(crate) fn dlp_rules_name(i: usize) -> String {
    format!("settings.dlp_rules[{i}]")
}

/// Builds the DLP scanner a policy's settings describe (default rules + `dlp_rules` −
/// `dlp_disable`, plus `known` secrets). Errors name the setting and, for rule files, the
/// line and rule id.
pub(crate) fn dlp_scanner<'a>(
    settings: &Settings,
    known: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<bottle_scanner::Scanner, (Vec<Seg>, String)> {
    let mut b = bottle_scanner::Scanner::builder().default_rules(true);
    for (i, text) in settings.dlp_rules.iter().enumerate() {
        b = b
            .rules_toml(&dlp_rules_name(i), text)
            .map_err(|e| (vec![k("dlp_rules"), Seg::Index(i)], e.to_string()))?;
    }
    let disable_err = |e: bottle_scanner::RuleError| (vec![k("dlp_disable")], e.to_string());
    b = b.disable(&settings.dlp_disable).map_err(disable_err)?;
    for (name, value) in known {
        b = b.known_secret(name, value);
    }
    b.build().map_err(|e| {
        let msg = e.to_string();
        if msg.contains("settings.dlp_rules[") {
            (vec![k("dlp_rules")], msg)
        } else {
            (vec![k("dlp_disable")], msg)
        }
    })
}

/// The rule ids a policy's DLP scanner will have (cached for the default ruleset).
fn dlp_rule_ids(settings: &Settings) -> Result<Vec<String>, Invalid> {
    static DEFAULT: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    if settings.dlp_rules.is_empty() && settings.dlp_disable.is_empty() {
        let ids = DEFAULT.get_or_init(|| {
            bottle_scanner::Scanner::builder()
                .default_rules(true)
                .build()
                .map(|s| s.rules().into_iter().map(|r| r.id).collect())
                .unwrap_or_default()
        });
        return Ok(ids.clone());
    }
    let scanner = dlp_scanner(settings, std::iter::empty())
        .map_err(|(key, reason)| invalid(&[k("settings")], &key, reason))?;
    Ok(scanner.rules().into_iter().map(|r| r.id).collect())
}

/// Checks every route's `dlp = [ids]` against the rules the scanner has: a typo would
/// otherwise silently leave a route with only the core floor.
fn check_route_rule_ids(spec: &PolicyFile, ids: &[String]) -> Result<(), Invalid> {
    for (i, rs) in spec.routes.iter().enumerate() {
        let Some(DlpSpec::Rules(list)) = &rs.dlp else {
            continue;
        };
        for (j, id) in list.iter().enumerate() {
            if !ids.iter().any(|x| x == id) {
                let hint = closest(id, ids)
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_else(|| "; `bottle scan --list-rules` lists them".into());
                return Err(invalid(
                    &[k("route"), Seg::Index(i)],
                    &[k("dlp"), Seg::Index(j)],
                    format!("unknown DLP rule id `{id}`{hint}"),
                ));
            }
        }
    }
    Ok(())
}

/// The candidate within edit distance 3 closest to `word`.
fn closest<'a>(word: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, c)| c.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses a config host: exact canonical host or a leading `*.` wildcard over
/// a canonical, non-public-suffix domain.
pub(crate) fn host_pattern(host: &str) -> Result<HostPattern, String> {
    if host.is_empty() {
        return Err("is empty; name a host like `api.example.com` or `*.example.com`".into());
    }
    if host == "*" || host == "*." {
        return Err(
            "`*` would allow every host; name hosts, or a wildcard like `*.example.com`".into(),
        );
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        if suffix.contains('*') {
            return Err(format!(
                "`{host}`: a wildcard may only be one leading `*.` (like `*.example.com`)"
            ));
        }
        return match canonical_host(suffix) {
            Ok(Host::Name(n)) if n == suffix => {
                if is_public_suffix(&n) {
                    Err(format!(
                        "`{host}` is a public-suffix wildcard; name a registrable domain like `*.example.com`"
                    ))
                } else {
                    Ok(HostPattern::Wildcard(n))
                }
            }
            Ok(Host::Name(n)) => Err(format!("`{host}` is not canonical; write `*.{n}`")),
            Ok(Host::Ip(_)) => Err(format!(
                "`{host}`: wildcards cover DNS names, not IP addresses; name the address exactly"
            )),
            Err(e) => Err(format!(
                "`{host}` is not a valid wildcard: the suffix {}",
                e.reason
            )),
        };
    }
    if host.contains('*') {
        return Err(format!(
            "`{host}`: a wildcard may only be one leading `*.` (like `*.example.com`)"
        ));
    }
    if host.contains("://") {
        return Err(format!(
            "`{host}` is a URL, not a host; write only the host name, like `example.com` (ports go in `ports`, paths in `matches`)"
        ));
    }
    match canonical_host(host) {
        Ok(h) => {
            let canonical = h.to_string();
            if canonical == host {
                Ok(HostPattern::Exact(h))
            } else {
                Err(format!("`{host}` is not canonical; write `{canonical}`"))
            }
        }
        Err(e)
            if host.contains(':') && !host.starts_with('[') && host.matches(':').count() == 1 =>
        {
            Err(format!(
                "`{host}`: {}; put the port in `ports = [...]`",
                e.reason
            ))
        }
        Err(e) => Err(format!("`{host}` is not a valid host: it {}", e.reason)),
    }
}

fn route(rs: &RouteSpec, at: &[Seg]) -> Result<Route, Invalid> {
    let host = host_pattern(&rs.host).map_err(|r| invalid(at, &[k("host")], r))?;
    let id = match &rs.id {
        Some(id) => {
            check_id(id).map_err(|r| invalid(at, &[k("id")], r))?;
            id.clone()
        }
        None => rs.host.clone(),
    };
    let mut ports = Vec::new();
    for (i, &p) in rs.ports.iter().enumerate() {
        if p == 0 {
            return Err(invalid(
                at,
                &[k("ports"), Seg::Index(i)],
                "port 0 is not a port; give 1-65535",
            ));
        }
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    if ports.is_empty() {
        ports = vec![443, 80];
    }
    let mut matches = Vec::with_capacity(rs.matches.len());
    for (i, m) in rs.matches.iter().enumerate() {
        let mat = [k("matches"), Seg::Index(i)];
        let mut p = at.to_vec();
        p.extend_from_slice(&mat);
        matches.push(request_match(m, &p)?);
    }
    let mut allow_private = Vec::with_capacity(rs.allow_private.len());
    for (i, text) in rs.allow_private.iter().enumerate() {
        let net = cidr(text).map_err(|r| invalid(at, &[k("allow_private"), Seg::Index(i)], r))?;
        allow_private.push(net);
    }
    if rs.passthrough {
        let refuse = |key: &str, what: &str| {
            invalid(
                at,
                &[k(key)],
                format!(
                    "a passthrough route is spliced without TLS interception, so the proxy cannot {what}; remove `{key}` or set `passthrough = false`"
                ),
            )
        };
        if !rs.matches.is_empty() {
            return Err(refuse("matches", "check paths, methods or headers"));
        }
        if rs.auth.is_some() {
            return Err(refuse("auth", "inject credentials"));
        }
        if matches!(
            rs.dlp,
            Some(DlpSpec::Enabled(true)) | Some(DlpSpec::Rules(_))
        ) {
            return Err(refuse(
                "dlp",
                "scan requests (write `dlp = false` or leave it out)",
            ));
        }
        if rs.inbound_dlp == Some(true) {
            return Err(refuse("inbound_dlp", "scan responses"));
        }
        if rs.git_push == Some(true) {
            return Err(refuse("git_push", "tell a push from a fetch"));
        }
        if rs.websocket == Some(true) {
            return Err(refuse("websocket", "parse WebSocket frames"));
        }
        for (key, set) in [
            ("on_match", rs.on_match.is_some()),
            ("body_cap", rs.body_cap.is_some()),
            ("over_cap", rs.over_cap.is_some()),
        ] {
            if set {
                return Err(refuse(key, "see bodies"));
            }
        }
    }
    if let Some(DlpSpec::Rules(rules)) = &rs.dlp {
        for (i, r) in rules.iter().enumerate() {
            if r.trim().is_empty() || r.len() > 128 {
                return Err(invalid(
                    at,
                    &[k("dlp"), Seg::Index(i)],
                    "a DLP rule id must be a non-empty name (at most 128 bytes)",
                ));
            }
        }
    }
    let on_match = rs.on_match.unwrap_or_default();
    if on_match == OnMatch::Allow {
        return Err(invalid(
            at,
            &[k("on_match")],
            "`allow` would forward secrets DLP found; use `block` or `redact` (`allow` is only for `over_cap`)",
        ));
    }
    let body_cap = rs.body_cap.unwrap_or(DEFAULT_BODY_CAP);
    if body_cap < BODY_CAP_RANGE.0 || body_cap > BODY_CAP_RANGE.1 {
        return Err(invalid(
            at,
            &[k("body_cap")],
            format!(
                "{body_cap} is out of range; give {} to {} bytes",
                BODY_CAP_RANGE.0, BODY_CAP_RANGE.1
            ),
        ));
    }
    if let Some(auth) = &rs.auth {
        check_auth(auth).map_err(|(key, r)| invalid(at, &[k("auth"), k(key)], r))?;
    }
    let dlp = if rs.passthrough {
        DlpSpec::Enabled(false)
    } else {
        rs.dlp.clone().unwrap_or(DlpSpec::Enabled(true))
    };
    let label_cap = label_cap(rs, at)?;
    if !matches!(host, HostPattern::Wildcard(_))
        && matches!(rs.label_cap, Some(LabelCapSpec::Limits(_)))
    {
        return Err(invalid(
            at,
            &[k("label_cap")],
            "label_cap applies to wildcard routes (`*.example.com`) only; remove it here",
        ));
    }
    let label_cap = label_cap.filter(|_| matches!(host, HostPattern::Wildcard(_)));
    Ok(Route {
        git_push: rs.git_push.unwrap_or(false),
        websocket: rs.websocket.unwrap_or(true) && !rs.passthrough,
        label_cap,
        id,
        host,
        ports,
        matches,
        passthrough: rs.passthrough,
        allow_private,
        dlp,
        on_match,
        inbound_dlp: rs.inbound_dlp.unwrap_or(false),
        body_cap,
        over_cap: rs.over_cap.unwrap_or_default(),
        auth: rs.auth.clone(),
    })
}

/// The route's label cap: the default unless `label_cap = false` or explicit limits.
fn label_cap(rs: &RouteSpec, at: &[Seg]) -> Result<Option<LabelCap>, Invalid> {
    let d = LabelCap::DEFAULT;
    let limits = match &rs.label_cap {
        None | Some(LabelCapSpec::Enabled(true)) => return Ok(Some(d)),
        Some(LabelCapSpec::Enabled(false)) => return Ok(None),
        Some(LabelCapSpec::Limits(l)) => l,
    };
    let max_len = limits.max_len.unwrap_or(d.max_len);
    if !(8..=63).contains(&max_len) {
        return Err(invalid(
            at,
            &[k("label_cap"), k("max_len")],
            format!("{max_len} is out of range; give 8 to 63 (a DNS label is at most 63 bytes)"),
        ));
    }
    let max_entropy = limits.max_entropy.unwrap_or(d.max_entropy);
    if !(2.0..=6.0).contains(&max_entropy) {
        return Err(invalid(
            at,
            &[k("label_cap"), k("max_entropy")],
            format!("{max_entropy} is out of range; give 2.0 to 6.0 bits per character"),
        ));
    }
    Ok(Some(LabelCap {
        max_len,
        max_entropy,
    }))
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err("a route id must be 1 to 128 characters".into());
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return Err(
            "a route id may only contain visible ASCII characters (no spaces, quotes or backslashes)"
                .into(),
        );
    }
    Ok(())
}

/// Parses an `allow_private` entry: a CIDR with no host bits, or a single address.
fn cidr(text: &str) -> Result<IpNet, String> {
    let net = match IpNet::from_str(text) {
        Ok(n) => n,
        Err(_) => match IpAddr::from_str(text) {
            Ok(ip) => IpNet::from(ip),
            Err(_) => {
                return Err(format!(
                "`{text}` is not a CIDR range like `172.17.0.0/16` or an address like `172.17.0.1`"
            ))
            }
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "`{text}` has host bits set; write `{}` (or `{}/{}` for the single address)",
            net.trunc(),
            net.addr(),
            net.max_prefix_len()
        ));
    }
    let min = match net {
        IpNet::V4(_) => 8,
        IpNet::V6(_) => 7,
    };
    if net.prefix_len() < min {
        return Err(format!(
            "`{text}` is too wide (shorter than /{min}); name only the private ranges this route needs"
        ));
    }
    Ok(net)
}

fn check_auth(auth: &AuthSpec) -> Result<(), (&'static str, String)> {
    match (&auth.scheme, &auth.header) {
        (Some(_), Some(_)) => {
            return Err((
                "header",
                "give either `scheme` (sent in Authorization) or `header` (raw secret in that header), not both".into(),
            ))
        }
        (None, None) => {
            return Err((
                "scheme",
                "give `scheme = \"Bearer\"` (or `token`, `Basic`) or `header = \"x-api-key\"`".into(),
            ))
        }
        (Some(scheme), None) => {
            if !AUTH_SCHEMES.contains(&scheme.as_str()) {
                let hint = AUTH_SCHEMES
                    .iter()
                    .find(|s| s.eq_ignore_ascii_case(scheme))
                    .map(|s| format!("; write `{s}`"))
                    .unwrap_or_default();
                return Err((
                    "scheme",
                    format!("`{scheme}` is not one of `Bearer`, `token`, `Basic`{hint}"),
                ));
            }
        }
        (None, Some(header)) => {
            check_header_name(header).map_err(|r| ("header", r))?;
            if FORBIDDEN_AUTH_HEADERS.contains(&header.as_str()) {
                return Err((
                    "header",
                    format!("`{header}` controls framing or routing and cannot carry a credential"),
                ));
            }
        }
    }
    if auth.secret.is_empty()
        || auth.secret.len() > 128
        || !auth
            .secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err((
            "secret",
            "must be the *name* of a secret (1-128 of A-Z a-z 0-9 _ - .), never its value".into(),
        ));
    }
    Ok(())
}

fn check_header_name(name: &str) -> Result<HeaderName, String> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "header names must be lower case; write `{}`",
            name.to_ascii_lowercase()
        ));
    }
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))
}

fn request_match(m: &MatchSpec, at: &[Seg]) -> Result<RequestMatch, Invalid> {
    let given = [
        m.path.is_some(),
        m.path_prefix.is_some(),
        m.path_regex.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given > 1 {
        let key = if m.path_regex.is_some() {
            "path_regex"
        } else {
            "path_prefix"
        };
        return Err(invalid(
            at,
            &[k(key)],
            "give at most one of `path`, `path_prefix`, `path_regex` per match (add another `[[route.matches]]` for more)",
        ));
    }
    let canonical_path = |p: &str, key: &str| -> Result<String, Invalid> {
        match normalize_path(p) {
            Ok(c) if c == p => Ok(c),
            Ok(c) => Err(invalid(
                at,
                &[k(key)],
                format!("`{p}` is not a canonical path; write `{c}` (requests are matched after dot segments are removed, unreserved escapes decoded and slashes collapsed)"),
            )),
            Err(e) => Err(invalid(at, &[k(key)], format!("`{p}`: {}", e.reason))),
        }
    };
    let path = if let Some(p) = &m.path {
        PathRule::Exact(canonical_path(p, "path")?)
    } else if let Some(p) = &m.path_prefix {
        PathRule::Prefix(canonical_path(p, "path_prefix")?)
    } else if let Some(r) = &m.path_regex {
        if r.is_empty() {
            return Err(invalid(
                at,
                &[k("path_regex")],
                "is empty; leave it out to allow any path",
            ));
        }
        let re = RegexBuilder::new(&format!("^(?:{r})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .nest_limit(64)
            .build()
            .map_err(|e| invalid(at, &[k("path_regex")], regex_reason(&e)))?;
        PathRule::Regex(re)
    } else {
        PathRule::Any
    };
    let mut methods = Vec::with_capacity(m.methods.len());
    for (i, method) in m.methods.iter().enumerate() {
        let key = [k("methods"), Seg::Index(i)];
        if method.is_empty() {
            return Err(invalid(at, &key, "is empty; give a method like `GET`"));
        }
        if !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            || method.len() > 32
        {
            return Err(invalid(
                at,
                &key,
                format!("`{method}` is not an HTTP method"),
            ));
        }
        if method.bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(invalid(
                at,
                &key,
                format!(
                    "methods are case-sensitive and upper case; write `{}`",
                    method.to_ascii_uppercase()
                ),
            ));
        }
        if !methods.contains(method) {
            methods.push(method.clone());
        }
    }
    let mut headers = Vec::with_capacity(m.headers.len());
    for (name, value) in &m.headers {
        let key = [k("headers"), k(name)];
        let hn = check_header_name(name).map_err(|r| invalid(at, &key, r))?;
        if HeaderValue::from_str(value).is_err() {
            return Err(invalid(
                at,
                &key,
                "the value must be visible ASCII text (no control characters or line breaks)",
            ));
        }
        headers.push((hn, value.clone()));
    }
    Ok(RequestMatch {
        path,
        methods,
        headers,
    })
}

/// One-line reason from a regex error.
fn regex_reason(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(s) => {
            let line = s
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("error:"))
                .unwrap_or("invalid syntax");
            format!(
                "invalid regex: {}",
                line.trim_start_matches("error:").trim()
            )
        }
        regex::Error::CompiledTooBig(limit) => {
            format!("the regex compiles to more than {limit} bytes; simplify it")
        }
        _ => "invalid regex".into(),
    }
}
