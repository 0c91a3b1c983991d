//! Deny responses: the status of the reason, `X-Bottle-Deny: <code>` and a one-line body
//! telling the client (usually an agent) that this is policy, not a network fault.
use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::policy::{Deny, DenyReason};
use crate::server::body::{full, ProxyBody};

/// The response header carrying the deny code.
pub const DENY_HEADER: &str = "x-bottle-deny";

/// The response header carrying the DLP rule id of a `dlp` deny.
pub const RULE_HEADER: &str = "x-bottle-rule";

/// The one-line body of a deny response for `host`.
pub fn deny_body(host: &str, deny: &Deny) -> String {
    format!(
        "bottle: {host} {} ({}) — blocked by bottle policy; retrying via another route or address will not help.\n",
        deny.detail,
        deny.reason.code()
    )
}

/// Builds the deny response for `host` (the decided/canonical target, or the raw target
/// sanitised by the caller) with the reason's status.
pub fn deny_response(host: &str, deny: &Deny) -> Response<ProxyBody> {
    deny_response_with_status(host, deny, deny.reason.status())
}

/// Like [`deny_response`] with an explicit status (e.g. 431 for an oversized head).
pub fn deny_response_with_status(host: &str, deny: &Deny, status: u16) -> Response<ProxyBody> {
    let body = deny_body(host, deny);
    let len = body.len();
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    let h = resp.headers_mut();
    h.insert(DENY_HEADER, HeaderValue::from_static(deny.reason.code()));
    if let Some(rule) = deny
        .rule
        .as_deref()
        .and_then(|r| HeaderValue::from_str(r).ok())
    {
        h.insert(RULE_HEADER, rule);
    }
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    if matches!(deny.reason, DenyReason::Loop | DenyReason::BadRequest) {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_has_header_status_and_one_line_body() {
        let d = Deny::new(DenyReason::NoRoute, "no route allows evil.test");
        let r = deny_response("evil.test", &d);
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()[DENY_HEADER], "no_route");
        let b = deny_body("evil.test", &d);
        assert_eq!(b.lines().count(), 1);
        assert!(b.starts_with("bottle: evil.test no route allows evil.test"));
        assert!(b.contains(
            "blocked by bottle policy; retrying via another route or address will not help."
        ));
    }
}
