//! DLP and credential injection: the [`RequestInspector`] the sidecar installs.
//!
//! For every allowed request, before anything is forwarded:
//! 1. the URL (path, each query parameter, decoded repeatedly) and every agent-supplied
//!    header are scanned — *before* credential injection, so an injected token never
//!    matches itself;
//! 2. the body is buffered up to the route's `body_cap` and scanned through the scanner's
//!    decoders (JSON, form, multipart, gzip/deflate/br/zstd, raw). Nothing of a request that
//!    will be blocked is sent upstream. Over the cap, `over_cap` decides (block by default);
//! 3. credential injection is not done here: it is the proxy's next stage
//!    ([`crate::credentials`]), run after this inspector passed the request.
//!
//! A known secret (one of the bottle's own tokens) is allowed only in a credential header of
//! the route whose `auth.secret` names it (which is stripped and replaced anyway). Decoder
//! errors block (fail closed). Findings never carry values; deny details and audit records
//! carry the rule id and a location whose secret-looking names are withheld.
//!
//! `on_match = "redact"`: rule findings in headers replace that header's value with
//! `[REDACTED]`; rule findings in an identity-encoded body are overwritten in place with a
//! same-length `[REDACTED]***` marker; then everything is rescanned and anything left (an
//! escaped, base64'd or compressed copy) blocks. A URL is never rewritten (it blocks), and
//! the bottle's own secrets always block.
//!
//! `inbound_dlp = true`: the response body is buffered up to `body_cap` and scanned the same
//! way before the agent sees any of it; a finding replaces the response with a `dlp` deny.
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::Body;

use bottle_scanner::decode::{scan_body, scan_headers, scan_url, DecodeLimits};
use bottle_scanner::rules::shannon_entropy;
use bottle_scanner::{Finding, Scanner};

use crate::policy::{Deny, DenyReason, DlpSpec, OnMatch, Route, Settings};
use crate::server::body::{boxed, full, ProxyBody};
use crate::server::{InspectFuture, RequestHead, RequestInspector};

/// The DLP + credential inspector. Build one per proxy and share it.
pub struct DlpInspector {
    scanner: Scanner,
    /// Ids of the core-floor rules, which a route's `dlp = [ids]` list cannot leave out.
    core: std::collections::HashSet<String>,
    limits: DecodeLimits,
}

/// Errors building the inspector.
#[derive(Debug, thiserror::Error)]
pub enum DlpError {
    /// The ruleset could not be built.
    #[error("DLP rules: {0}")]
    Rules(String),
}

impl DlpInspector {
    /// An inspector with the rules `settings` describe (default ruleset, `dlp_rules`,
    /// `dlp_disable`) plus the bottle's own secrets as known secrets. `secrets` yields
    /// `(name, value)`; values stay in the scanner's memory only.
    pub fn new<'a>(
        settings: &Settings,
        secrets: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, DlpError> {
        let scanner = settings.dlp_scanner(secrets).map_err(DlpError::Rules)?;
        let core = scanner
            .rules()
            .iter()
            .filter(|r| r.core)
            .map(|r| r.id.clone())
            .collect();
        Ok(DlpInspector {
            scanner,
            core,
            limits: DecodeLimits::default(),
        })
    }

    /// The inspector a bottle's sidecar runs: the bottle's secrets plus the CA private key
    /// (its base64 body, under the name `bottle-ca-key`) as known secrets.
    pub fn for_bottle(
        settings: &Settings,
        secrets: &std::collections::HashMap<String, String>,
        ca_key_pem: &str,
    ) -> Result<Arc<dyn RequestInspector>, DlpError> {
        let key_body: String = ca_key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let known = secrets
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain((!key_body.is_empty()).then_some(("bottle-ca-key", key_body.as_str())));
        Ok(Self::new(settings, known)?.shared())
    }

    /// Wraps it for [`crate::ProxyBuilder::inspector`].
    pub fn shared(self) -> Arc<dyn RequestInspector> {
        Arc::new(self)
    }
}

/// The first finding this route must act on, if any.
fn blocking<'f>(
    route: &Route,
    core: &std::collections::HashSet<String>,
    findings: &'f [Finding],
) -> Option<&'f Finding> {
    let own = route.auth.as_ref().map(|a| a.secret.as_str());
    findings.iter().find(|f| match &f.known_secret {
        // The bottle's own token is tolerated only in a credential header of the route it
        // belongs to (that header is stripped and replaced below). Anywhere else — even the
        // body or URL of its own route, e.g. a gist on the credentialed API — it is a leak.
        Some(name) => !(Some(name.as_str()) == own && in_stripped_header(route, f)),
        None => match &route.dlp {
            DlpSpec::Enabled(on) => *on,
            DlpSpec::Rules(ids) => ids.contains(&f.rule_id) || core.contains(&f.rule_id),
        },
    })
}

/// Whether a finding sits in a header that credential injection strips on this route.
fn in_stripped_header(route: &Route, f: &Finding) -> bool {
    let Some(h) = f
        .location
        .as_deref()
        .and_then(|l| l.strip_prefix("header:"))
    else {
        return false;
    };
    matches!(h, "authorization" | "proxy-authorization" | "cookie")
        || route
            .auth
            .as_ref()
            .and_then(|a| a.header.as_deref())
            .is_some_and(|name| name.eq_ignore_ascii_case(h))
}

/// The deny for a finding: rule id and a location whose names cannot carry the secret.
fn dlp_deny(scanner: &Scanner, f: &Finding) -> Deny {
    let what = f
        .known_secret
        .as_deref()
        .map(|n| format!("the bottle's secret {n}"))
        .unwrap_or_else(|| format!("rule {}", f.rule_id));
    let loc = safe_location(scanner, f.location.as_deref().unwrap_or("request"));
    Deny::new(
        DenyReason::Dlp,
        format!("secret detected ({what}) in {loc}"),
    )
    .with_dlp(f.rule_id.clone(), Some(loc))
}

/// Longest location component shown as is.
const MAX_NAME: usize = 48;

/// A location safe to show to the client and to write to the audit log. Locations name
/// query parameters, headers, JSON keys and multipart parts, and a secret can hide in a
/// *name* (`{"ghp_…": 1}`): every component that the scanner flags, that is long, or that
/// looks random (≥ 16 bytes with ≥ 3.5 bits of entropy per byte) is replaced by `…`.
pub fn safe_location(scanner: &Scanner, loc: &str) -> String {
    const DELIMS: &[char] = &[':', '.', '[', ']', '(', ')', '$'];
    let mut out = String::with_capacity(loc.len());
    let mut rest = loc;
    while !rest.is_empty() {
        let end = rest.find(DELIMS).unwrap_or(rest.len());
        let (name, tail) = rest.split_at(end);
        if !name.is_empty() {
            if looks_secret(scanner, name) {
                out.push('…');
            } else {
                out.push_str(name);
            }
        }
        let mut chars = tail.chars();
        if let Some(d) = chars.next() {
            out.push(d);
        }
        rest = chars.as_str();
    }
    if !scanner.scan(out.as_bytes()).is_empty() {
        // A secret spread over several short components: keep only the kind.
        let kind = out.split([':', '.', '[']).next().unwrap_or("");
        return format!("{kind}:…");
    }
    out
}

fn looks_secret(scanner: &Scanner, name: &str) -> bool {
    name.len() > MAX_NAME
        || (name.len() >= 16 && shannon_entropy(name.as_bytes()) >= 3.5)
        || !scanner.scan(name.as_bytes()).is_empty()
}

/// What to do about a set of findings on a route.
enum Verdict<'f> {
    /// Nothing to act on.
    Clean,
    /// `on_match = "redact"`: these findings are to be replaced before forwarding.
    Redact(Vec<&'f Finding>),
}

/// Decides on `findings`: clean, redact (only on `on_match = "redact"` routes, and never
/// for the bottle's own secrets, which always block), or the deny of the first finding.
fn verdict<'f>(
    scanner: &Scanner,
    route: &Route,
    core: &std::collections::HashSet<String>,
    findings: &'f [Finding],
) -> Result<Verdict<'f>, Deny> {
    let Some(first) = blocking(route, core, findings) else {
        return Ok(Verdict::Clean);
    };
    if route.on_match != OnMatch::Redact || first.known_secret.is_some() {
        return Err(dlp_deny(scanner, first));
    }
    let mut all = Vec::new();
    for (i, f) in findings.iter().enumerate() {
        if blocking(route, core, &findings[i..=i]).is_some() {
            if f.known_secret.is_some() {
                return Err(dlp_deny(scanner, f));
            }
            all.push(f);
        }
    }
    Ok(Verdict::Redact(all))
}

/// Blocks on any finding this route acts on (URLs are never rewritten: redaction would
/// change the resource, so a secret in a URL blocks even on `redact` routes).
fn check(
    scanner: &Scanner,
    route: &Route,
    core: &std::collections::HashSet<String>,
    findings: &[Finding],
) -> Result<(), Deny> {
    match blocking(route, core, findings) {
        None => Ok(()),
        Some(f) => Err(dlp_deny(scanner, f)),
    }
}

/// The bytes that replace a redacted secret: `[REDACTED]` padded with `*` (or cut) to the
/// secret's length, so lengths, offsets and JSON/form syntax stay valid.
fn marker(len: usize) -> Vec<u8> {
    let mut m = b"[REDACTED]".to_vec();
    m.resize(len.max(m.len()), b'*');
    m.truncate(len);
    m
}

/// Overwrites each `(offset, len)` span of `buf` with [`marker`]. Spans outside `buf` are
/// ignored (the rescan that follows catches anything left).
fn redact_spans(buf: &mut [u8], spans: impl IntoIterator<Item = (usize, usize)>) {
    for (off, len) in spans {
        if let Some(end) = off.checked_add(len).filter(|&e| e <= buf.len()) {
            buf[off..end].copy_from_slice(&marker(len));
        }
    }
}

/// The header names (lowercase) that redaction replaces for these findings. Findings in
/// the joined values (`header:*`) name no header; the rescan after redaction decides them.
fn redacted_header_names(findings: &[&Finding]) -> Vec<String> {
    findings
        .iter()
        .filter_map(|f| {
            f.location
                .as_deref()
                .and_then(|l| l.strip_prefix("header:"))
                .filter(|n| *n != "*")
                .map(str::to_owned)
        })
        .collect()
}

/// Reads up to `cap` bytes. `Ok((buf, None))` = whole body; `Ok((buf, Some(rest)))` = over cap.
async fn read_capped(mut body: ProxyBody, cap: usize) -> Result<(Bytes, Option<ProxyBody>), Deny> {
    // Sized from Content-Length (up to the cap and 1 MiB: a claimed length is not trusted
    // with more), so the buffer does not grow by copying.
    let hint = body.size_hint().lower().min(cap as u64 + 1).min(1 << 20) as usize;
    let mut buf = BytesMut::with_capacity(hint);
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| Deny::new(DenyReason::BadRequest, format!("reading request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.is_empty() && body.is_end_stream() {
                // The whole body in one frame: no copy (over the cap it is returned whole, as
                // below, with the ended rest).
                return Ok(if data.len() > cap {
                    (data, Some(body))
                } else {
                    (data, None)
                });
            }
            buf.extend_from_slice(&data);
            if buf.len() > cap {
                return Ok((buf.freeze(), Some(body)));
            }
        }
    }
    Ok((buf.freeze(), None))
}

/// Buffers up to the route's `body_cap` for scanning; a larger body is refused unless the
/// route says `over_cap = "allow"` (then the unscanned rest is returned to forward).
async fn read_for_scan(
    body: ProxyBody,
    route: &Route,
    what: &str,
) -> Result<(Bytes, Option<ProxyBody>), Deny> {
    let (buf, rest) = read_capped(body, route.body_cap).await?;
    if rest.is_some() && route.over_cap != OnMatch::Allow {
        return Err(Deny::new(
            DenyReason::TooLarge,
            format!(
                "{what} over the route's DLP cap of {} bytes (body_cap)",
                route.body_cap
            ),
        ));
    }
    Ok((buf, rest))
}

impl DlpInspector {
    async fn run(&self, mut head: RequestHead<'_>, body: ProxyBody) -> Result<ProxyBody, Deny> {
        let route = head.route;
        let s = &self.scanner;
        check(s, route, &self.core, &scan_url(s, head.path_and_query))?;
        self.check_headers(&mut head)?;
        let scan_body = !(body.is_end_stream() || route.dlp == DlpSpec::Enabled(false));
        // Read before injection (which may replace headers); only needed for a body scan.
        let (ctype, cenc) = if scan_body {
            (
                header_str(head.headers, header::CONTENT_TYPE),
                header_str(head.headers, header::CONTENT_ENCODING),
            )
        } else {
            (None, None)
        };
        if !scan_body {
            return Ok(body);
        }
        let (buf, rest) = read_for_scan(body, route, "request body").await?;
        let buf = self.check_body(&mut head, ctype.as_deref(), cenc.as_deref(), buf)?;
        Ok(match rest {
            None => full(buf),
            Some(rest) => {
                let head_body = full(buf);
                boxed(Chain::new(head_body, rest))
            }
        })
    }

    /// Scans the agent's headers; on `redact` routes replaces the values of the headers a
    /// rule fired in with `[REDACTED]`, then rescans (anything left blocks).
    fn check_headers(&self, head: &mut RequestHead<'_>) -> Result<(), Deny> {
        let (s, route) = (&self.scanner, head.route);
        let findings = scan_headers(
            s,
            head.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
        );
        let Verdict::Redact(hits) = verdict(s, route, &self.core, &findings)? else {
            return Ok(());
        };
        for name in &redacted_header_names(&hits) {
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                head.headers
                    .insert(n, HeaderValue::from_static("[REDACTED]"));
            }
        }
        let again = scan_headers(
            s,
            head.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
        );
        check(s, route, &self.core, &again)?;
        note_redaction(head, s, hits[0]);
        Ok(())
    }

    /// Scans a buffered body through the decoders. On `redact` routes, identity-encoded
    /// bodies get every raw occurrence overwritten in place (same length) and are rescanned;
    /// a secret that survives (escaped, base64'd, compressed) blocks.
    fn check_body(
        &self,
        head: &mut RequestHead<'_>,
        ctype: Option<&str>,
        cenc: Option<&str>,
        buf: Bytes,
    ) -> Result<Bytes, Deny> {
        let (s, route) = (&self.scanner, head.route);
        let scan = |b: &[u8]| {
            scan_body(s, ctype, cenc, b, &self.limits)
                .map_err(|e| Deny::new(DenyReason::Dlp, format!("body could not be scanned: {e}")))
        };
        let scanned = scan(&buf)?;
        let Verdict::Redact(hits) = verdict(s, route, &self.core, &scanned.findings)? else {
            return Ok(buf);
        };
        let identity = match cenc {
            None => true,
            Some(c) => c.trim().eq_ignore_ascii_case("identity"),
        };
        if !identity {
            let d = dlp_deny(s, hits[0]);
            return Err(Deny {
                detail: format!("{} (a compressed body cannot be redacted)", d.detail),
                ..d
            });
        }
        let mut out = buf.to_vec();
        redact_spans(
            &mut out,
            scanned
                .findings
                .iter()
                .filter(|f| f.location.as_deref() == Some("body"))
                .filter(|f| blocking(route, &self.core, std::slice::from_ref(*f)).is_some())
                .map(|f| (f.offset, f.len)),
        );
        let again = scan(&out)?;
        if let Some(f) = blocking(route, &self.core, &again.findings) {
            let d = dlp_deny(s, f);
            return Err(Deny {
                detail: format!("{} (encoded, so it cannot be redacted in place)", d.detail),
                ..d
            });
        }
        note_redaction(head, s, hits[0]);
        Ok(Bytes::from(out))
    }

    /// Scans a response body on `inbound_dlp` routes (buffered up to `body_cap`). Any
    /// finding the route acts on replaces the response with a `dlp` deny.
    async fn run_response(
        &self,
        route: &Route,
        headers: &http::HeaderMap,
        body: ProxyBody,
    ) -> Result<ProxyBody, Deny> {
        let s = &self.scanner;
        if body.is_end_stream() {
            return Ok(body);
        }
        let (buf, rest) = read_for_scan(body, route, "response body").await?;
        let ctype = header_str(headers, header::CONTENT_TYPE);
        let cenc = header_str(headers, header::CONTENT_ENCODING);
        let scanned =
            scan_body(s, ctype.as_deref(), cenc.as_deref(), &buf, &self.limits).map_err(|e| {
                Deny::new(
                    DenyReason::Dlp,
                    format!("response could not be scanned: {e}"),
                )
            })?;
        if let Some(f) = blocking(route, &self.core, &scanned.findings) {
            let f = f.clone().at("response:");
            let d = dlp_deny(s, &f);
            return Err(d);
        }
        Ok(match rest {
            None => full(buf),
            Some(rest) => boxed(Chain::new(full(buf), rest)),
        })
    }
}

/// Tells the proxy (for the audit record) that this request was forwarded redacted.
fn note_redaction(head: &mut RequestHead<'_>, scanner: &Scanner, f: &Finding) {
    let loc = safe_location(scanner, f.location.as_deref().unwrap_or("request"));
    *head.redacted = Some((f.rule_id.clone(), Some(loc)));
}

fn header_str(h: &http::HeaderMap, name: HeaderName) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

impl RequestInspector for DlpInspector {
    fn inspect_host(&self, host: &str) -> Result<(), Deny> {
        // Every rule and known secret applies to a name, whatever a route's `dlp` says: no
        // route is decided yet, and the name leaves through DNS before any request does.
        let found = bottle_scanner::decode::scan_host(&self.scanner, host);
        match found.first() {
            None => Ok(()),
            Some(f) => {
                let what = f
                    .known_secret
                    .as_deref()
                    .map(|n| format!("the bottle's secret {n}"))
                    .unwrap_or_else(|| format!("rule {}", f.rule_id));
                Err(Deny::new(
                    DenyReason::HostName,
                    format!("secret detected ({what}) in the host name; it was not resolved"),
                )
                .with_dlp(f.rule_id.clone(), Some("host".to_owned())))
            }
        }
    }

    fn inspect_message(&self, route: &Route, payload: &[u8], text: bool) -> Result<(), Deny> {
        let s = &self.scanner;
        let ctype = if text {
            "text/plain"
        } else {
            "application/octet-stream"
        };
        let scanned = scan_body(s, Some(ctype), None, payload, &self.limits).map_err(|e| {
            Deny::new(
                DenyReason::Dlp,
                format!("WebSocket message could not be scanned: {e}"),
            )
        })?;
        match blocking(route, &self.core, &scanned.findings) {
            None => Ok(()),
            Some(f) => Err(dlp_deny(s, &f.clone().at("websocket:message"))),
        }
    }

    fn inspect<'a>(&'a self, head: RequestHead<'a>, body: ProxyBody) -> InspectFuture<'a> {
        Box::pin(self.run(head, body))
    }

    fn inspect_response<'a>(
        &'a self,
        route: &'a Route,
        headers: &'a http::HeaderMap,
        body: ProxyBody,
    ) -> InspectFuture<'a> {
        Box::pin(self.run_response(route, headers, body))
    }
}

pin_project_lite::pin_project! {
    /// Two bodies back to back (the scanned prefix, then the unscanned rest).
    struct Chain { #[pin] first: ProxyBody, #[pin] second: ProxyBody, first_done: bool }
}

impl Chain {
    fn new(first: ProxyBody, second: ProxyBody) -> Self {
        Chain {
            first,
            second,
            first_done: false,
        }
    }
}

impl Body for Chain {
    type Data = Bytes;
    type Error = crate::server::body::BoxError;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if !*this.first_done {
            match this.first.poll_frame(cx) {
                std::task::Poll::Ready(None) => *this.first_done = true,
                other => return other,
            }
        }
        this.second.poll_frame(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn route(extra: &str) -> Route {
        let p = Policy::from_toml_str(
            &format!("[[route]]\nhost = \"api.example.com\"\n{extra}\n"),
            "t.toml",
        )
        .unwrap();
        p.routes[0].clone()
    }

    fn known(name: &str, loc: &str) -> Finding {
        let s = Scanner::builder()
            .default_rules(false)
            .known_secret(name, "s3cr3t-value-0123456789abcdef")
            .build()
            .unwrap();
        let mut f = s.scan_located(b"x s3cr3t-value-0123456789abcdef y", loc);
        assert_eq!(f.len(), 1, "planted known secret found");
        f.remove(0)
    }

    #[test]
    fn own_token_only_in_its_credential_header() {
        let r = route("auth = { scheme = \"Bearer\", secret = \"TOK\" }");
        assert!(blocking(
            &r,
            &Default::default(),
            &[known("TOK", "header:authorization")]
        )
        .is_none());
        assert!(blocking(&r, &Default::default(), &[known("TOK", "header:x-leak")]).is_some());
        assert!(blocking(&r, &Default::default(), &[known("TOK", "query:q")]).is_some());
        assert!(blocking(
            &r,
            &Default::default(),
            &[known("OTHER", "header:authorization")]
        )
        .is_some());
        let plain = route("");
        assert!(blocking(
            &plain,
            &Default::default(),
            &[known("TOK", "header:authorization")]
        )
        .is_some());
    }

    #[test]
    fn known_secrets_block_even_with_dlp_off_and_deny_names_no_value() {
        let r = route("dlp = false");
        let f = known("TOK", "body");
        let s = Scanner::builder().build().unwrap();
        let d = check(&s, &r, &Default::default(), std::slice::from_ref(&f)).unwrap_err();
        assert_eq!(d.reason, DenyReason::Dlp);
        assert!(d.detail.contains("TOK") && !d.detail.contains("s3cr3t"));
    }

    #[test]
    fn rule_list_cannot_drop_the_core_floor() {
        let insp = DlpInspector::new(&Settings::default(), std::iter::empty()).unwrap();
        let token = format!("{}{}", "gh", "p_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z0A");
        let found = insp
            .scanner
            .scan_located(format!("t={token}").as_bytes(), "body");
        let f = found.first().expect("planted token found");
        assert!(insp.core.contains(&f.rule_id), "{} is core", f.rule_id);
        let r = route("dlp = [\"jwt\"]");
        assert!(blocking(&r, &insp.core, std::slice::from_ref(f)).is_some());
        assert!(blocking(&r, &Default::default(), std::slice::from_ref(f)).is_none());
    }

    #[test]
    fn safe_location_withholds_secret_looking_names() {
        let s = Scanner::builder().default_rules(true).build().unwrap();
        let pat = format!("{}{}", "gh", "p_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z0A");
        for keep in [
            "query:q",
            "header:x-api-key",
            "$.messages[0].content",
            "multipart:file(base64)",
            "response:body",
        ] {
            assert_eq!(safe_location(&s, keep), keep);
        }
        assert_eq!(safe_location(&s, &format!("$.{pat}")), "$.…");
        assert_eq!(safe_location(&s, &format!("header:{pat}")), "header:…");
        assert_eq!(
            safe_location(&s, "query:Zq8Xv2Lm4Np6Rt0Yw3Ks5Hd7"),
            "query:…",
            "random name"
        );
        assert_eq!(
            safe_location(&s, &format!("form:{}", "a".repeat(60))),
            "form:…",
            "long name"
        );
    }

    /// Bodies in one frame (taken without a copy) and in several are read alike, and over
    /// the cap they still block by default.
    #[test]
    fn capped_read_of_one_and_several_frames() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let data = Bytes::from(vec![b'x'; 2000]);
        let body = |frames: usize| match frames {
            1 => full(data.clone()),
            _ => boxed(Chain::new(full(data.slice(..700)), full(data.slice(700..)))),
        };
        rt.block_on(async {
            for frames in [1, 2] {
                let name = format!("{frames} frame(s)");
                let (b, rest) = read_capped(body(frames), 2000).await.unwrap();
                assert!(b == data && rest.is_none(), "{name}, at the cap");
                let (b, rest) = read_capped(body(frames), 1999).await.unwrap();
                assert!(
                    b.len() > 1999 && rest.is_some(),
                    "{name} frame(s), over the cap"
                );
                let capped = route("body_cap = 1024");
                let d = read_for_scan(body(frames), &capped, "request body")
                    .await
                    .expect_err("over the cap blocks");
                assert_eq!(d.reason, DenyReason::TooLarge, "{name}");
                let allow = route("body_cap = 1024\nover_cap = \"allow\"");
                let (b, rest) = read_for_scan(body(frames), &allow, "request body")
                    .await
                    .unwrap();
                let mut all = b.to_vec();
                all.extend(rest.unwrap().collect().await.unwrap().to_bytes());
                assert!(
                    all == data,
                    "{name}: over_cap = allow forwards every byte once"
                );
            }
        });
    }

    #[test]
    fn redaction_marker_keeps_length() {
        for n in [1, 5, 10, 40, 200] {
            let m = marker(n);
            assert_eq!(m.len(), n);
            assert!(m
                .iter()
                .all(|b| b.is_ascii_graphic() && *b != b'"' && *b != b'\\'));
        }
        let mut buf = b"token=SECRETSECRETSECRET;x".to_vec();
        redact_spans(&mut buf, [(6, 18), (100, 5)]);
        assert_eq!(&buf, b"token=[REDACTED]********;x");
    }
}
