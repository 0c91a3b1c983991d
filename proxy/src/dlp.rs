//! DLP and credential injection: the [`RequestInspector`] the sidecar installs.
//!
//! For every allowed request, before anything is forwarded:
//! 1. the URL (path, each query parameter, decoded repeatedly) and every agent-supplied
//!    header are scanned — *before* credential injection, so an injected token never
//!    matches itself;
//! 2. the body is buffered up to the route's `body_cap` and scanned through the scanner's
//!    decoders (JSON, form, multipart, gzip/deflate/br/zstd, raw). Nothing of a request that
//!    will be blocked is sent upstream. Over the cap, `over_cap` decides (block by default);
//! 3. on a credentialed route, client `Authorization`, `Proxy-Authorization`, the configured
//!    header and cookies are stripped and the real value is injected — only over TLS, and
//!    never for `TRACE`.
//!
//! A known secret (one of the bottle's own tokens) is allowed only in a credential header of
//! the route whose `auth.secret` names it (which is stripped and replaced anyway). Decoder errors block (fail closed). Findings never carry values.
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::Body;

use bottle_scanner::decode::{scan_body, scan_headers, scan_url, DecodeLimits};
use bottle_scanner::{Finding, Scanner};

use crate::policy::{Deny, DenyReason, DlpSpec, OnMatch, Route};
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
    /// An inspector with the default ruleset plus the bottle's own secrets as known secrets.
    /// `secrets` yields `(name, value)`; values stay in the scanner's memory only.
    pub fn new<'a>(
        secrets: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, DlpError> {
        let mut b = Scanner::builder().default_rules(true);
        for (name, value) in secrets {
            b = b.known_secret(name, value);
        }
        let scanner = b.build().map_err(|e| DlpError::Rules(e.to_string()))?;
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
        Ok(Self::new(known)?.shared())
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

fn dlp_deny(f: &Finding) -> Deny {
    let what = f
        .known_secret
        .as_deref()
        .map(|n| format!("the bottle's secret {n}"))
        .unwrap_or_else(|| format!("rule {}", f.rule_id));
    let loc = f.location.as_deref().unwrap_or("request");
    Deny::new(
        DenyReason::Dlp,
        format!("secret detected ({what}) in {loc}"),
    )
}

fn check(
    route: &Route,
    core: &std::collections::HashSet<String>,
    findings: &[Finding],
) -> Result<(), Deny> {
    match blocking(route, core, findings) {
        None => Ok(()),
        // `redact` is not applied to structured data yet: blocking is the safe choice.
        Some(f) => Err(dlp_deny(f)),
    }
}

/// Strips client credentials and injects the route's real one.
fn inject(head: &mut RequestHead<'_>) -> Result<(), Deny> {
    let Some(auth) = head.route.auth.as_ref() else {
        return Ok(());
    };
    if !head.tls {
        return Err(Deny::new(
            DenyReason::BadRequest,
            "credentialed route is only served over https".to_string(),
        ));
    }
    if head.method == http::Method::TRACE {
        return Err(Deny::new(
            DenyReason::Method,
            "TRACE is refused on a credentialed route".to_string(),
        ));
    }
    let Some(value) = head.secrets.get(&auth.secret) else {
        return Err(Deny::new(
            DenyReason::Upstream,
            format!(
                "credential {} was not delivered to the sidecar",
                auth.secret
            ),
        ));
    };
    let h = &mut *head.headers;
    h.remove(header::AUTHORIZATION);
    h.remove(header::PROXY_AUTHORIZATION);
    h.remove(header::COOKIE);
    let (name, raw) = match (&auth.header, &auth.scheme) {
        (Some(name), _) => (name.to_ascii_lowercase(), value.to_string()),
        (None, Some(scheme)) => ("authorization".to_string(), format!("{scheme} {value}")),
        (None, None) => ("authorization".to_string(), format!("Bearer {value}")),
    };
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        Deny::new(
            DenyReason::BadRequest,
            "invalid auth header name".to_string(),
        )
    })?;
    h.remove(&name);
    let mut v = HeaderValue::from_str(&raw).map_err(|_| {
        Deny::new(
            DenyReason::BadRequest,
            format!("credential {} is not a valid header value", auth.secret),
        )
    })?;
    v.set_sensitive(true);
    h.insert(name, v);
    Ok(())
}

/// Reads up to `cap` bytes. `Ok((buf, None))` = whole body; `Ok((buf, Some(rest)))` = over cap.
async fn read_capped(mut body: ProxyBody, cap: usize) -> Result<(Bytes, Option<ProxyBody>), Deny> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| Deny::new(DenyReason::BadRequest, format!("reading request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > cap {
                return Ok((buf.freeze(), Some(body)));
            }
        }
    }
    Ok((buf.freeze(), None))
}

impl DlpInspector {
    async fn run(&self, mut head: RequestHead<'_>, body: ProxyBody) -> Result<ProxyBody, Deny> {
        let route = head.route;
        let s = &self.scanner;
        check(route, &self.core, &scan_url(s, head.path_and_query))?;
        let hdrs: Vec<(&str, &[u8])> = head
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        check(route, &self.core, &scan_headers(s, hdrs))?;
        let ctype = header_str(head.headers, header::CONTENT_TYPE);
        let cenc = header_str(head.headers, header::CONTENT_ENCODING);
        inject(&mut head)?;
        if body.is_end_stream() || route.dlp == DlpSpec::Enabled(false) {
            return Ok(body);
        }
        let (buf, rest) = read_capped(body, route.body_cap).await?;
        if rest.is_some() && route.over_cap != OnMatch::Allow {
            return Err(Deny::new(
                DenyReason::TooLarge,
                format!(
                    "request body over the route's DLP cap of {} bytes (body_cap)",
                    route.body_cap
                ),
            ));
        }
        let scanned = scan_body(s, ctype.as_deref(), cenc.as_deref(), &buf, &self.limits)
            .map_err(|e| Deny::new(DenyReason::Dlp, format!("body could not be scanned: {e}")))?;
        check(route, &self.core, &scanned.findings)?;
        Ok(match rest {
            None => full(buf),
            Some(rest) => {
                let head_body = full(buf);
                boxed(Chain::new(head_body, rest))
            }
        })
    }
}

fn header_str(h: &http::HeaderMap, name: HeaderName) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

impl RequestInspector for DlpInspector {
    fn inspect<'a>(&'a self, head: RequestHead<'a>, body: ProxyBody) -> InspectFuture<'a> {
        Box::pin(self.run(head, body))
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
        let d = check(&r, &Default::default(), std::slice::from_ref(&f)).unwrap_err();
        assert_eq!(d.reason, DenyReason::Dlp);
        assert!(d.detail.contains("TOK") && !d.detail.contains("s3cr3t"));
    }

    #[test]
    fn rule_list_cannot_drop_the_core_floor() {
        let insp = DlpInspector::new(std::iter::empty()).unwrap();
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
}
